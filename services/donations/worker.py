"""Entry point of the donations worker (`celery -A services.donations.worker worker`)."""

from services.donations.app import create_app

flask_app = create_app()
celery = flask_app.extensions["aidlink"].celery

"""Entry point of the community worker (`celery -A services.community.worker worker`)."""

from services.community.app import create_app

flask_app = create_app()
celery = flask_app.extensions["aidlink"].celery

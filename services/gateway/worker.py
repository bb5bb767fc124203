"""Entry point of the gateway worker (`celery -A services.gateway.worker worker`)."""

from services.gateway.app import create_app

flask_app = create_app()
celery = flask_app.extensions["aidlink"].celery

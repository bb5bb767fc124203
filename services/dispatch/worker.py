"""Entry point of the dispatch worker (`celery -A services.dispatch.worker worker`)."""

from services.dispatch.app import create_app

flask_app = create_app()
celery = flask_app.extensions["aidlink"].celery

"""Entry point of the dispatch worker (`celery -A services.dispatch.worker worker`)."""

from services.dispatch.app import create_app
from shared.catalog import regions

flask_app = create_app()
celery = flask_app.extensions["aidlink"].celery

# The regions and their points, read before the pool's process is forked from this one:
# the first matching run after a start then finds them loaded (half a second otherwise).
regions.table()

"""Timer units and crontab lines generated from jobs."""

"""Experiment tracking of finished jobs (worker side): ``mlflow_run`` logs each job as an MLflow run
when ``CURVEDIT_MLFLOW_TRACKING_URI`` is set."""

"""Integrations with the tools teams already run: MLflow, W&B, Prefect, Airflow, Kubeflow, DVC.

Each module here needs its tool's package (an optional extra, ``pip install
'evertrain[mlflow]'``...) and is imported only by the command or setting that uses it,
so the core CLI never pays for them. They sit above the controller and below the faces:
they call the loop's parts and the store, and the commands call them.
"""

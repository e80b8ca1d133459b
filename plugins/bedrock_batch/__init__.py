"""Amazon Bedrock batch inference for Apache Airflow 3.

Pure pipeline logic lives in the top-level modules; Airflow adapters in hooks, operators, sensors, triggers.
"""

__version__ = "0.1.0"

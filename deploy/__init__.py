"""Deploy gan-serve as a SageMaker real-time endpoint with target-tracking autoscaling (boto3).

`python -m deploy --help`; `--dry-run` prints every AWS API call, one JSON object per line, and
makes none. The plan (`deploy.plan`) is pure data; `deploy.execute` runs it with boto3 clients.
"""

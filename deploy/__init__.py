"""Deploy gan-serve on SageMaker: real-time, asynchronous and serverless endpoints, Batch Transform jobs.

`gan-deploy --help`, `gan-deploy transform --help`; `--dry-run` prints every AWS API call, one JSON
object per line, and makes none. The plans (`deploy.plan`, `deploy.transform`) are pure data;
`deploy.execute` runs them with boto3 clients.
"""

import pytest

from proxysigv4_core.inference import infer_service_region

CASES = [
    ("abc123.execute-api.us-east-1.amazonaws.com", "execute-api", "us-east-1"),
    ("abcdefg.lambda-url.eu-west-1.on.aws", "lambda", "eu-west-1"),
    ("search-dom-abc.eu-west-1.es.amazonaws.com", "es", "eu-west-1"),
    ("vpc-dom-abc.us-gov-west-1.es.amazonaws.com", "es", "us-gov-west-1"),
    ("abc123.us-east-2.aoss.amazonaws.com", "aoss", "us-east-2"),
    ("s3.amazonaws.com", "s3", "us-east-1"),
    ("my-bucket.s3.amazonaws.com", "s3", "us-east-1"),
    ("my.dotted.bucket.s3.eu-central-1.amazonaws.com", "s3", "eu-central-1"),
    ("s3.eu-central-1.amazonaws.com", "s3", "eu-central-1"),
    ("s3.dualstack.ap-south-1.amazonaws.com", "s3", "ap-south-1"),
    ("bucket.s3.dualstack.ap-south-1.amazonaws.com", "s3", "ap-south-1"),
    ("s3-us-west-2.amazonaws.com", "s3", "us-west-2"),
    ("bucket.s3-us-west-2.amazonaws.com", "s3", "us-west-2"),
    ("s3-external-1.amazonaws.com", "s3", "us-east-1"),
    ("s3-fips.us-east-1.amazonaws.com", "s3", "us-east-1"),
    ("ap-123456789012.s3-accesspoint.us-west-2.amazonaws.com", "s3", "us-west-2"),
    ("bedrock.us-east-1.amazonaws.com", "bedrock", "us-east-1"),
    ("bedrock-runtime.us-west-2.amazonaws.com", "bedrock", "us-west-2"),
    ("bedrock-runtime-fips.us-east-1.amazonaws.com", "bedrock", "us-east-1"),
    ("bedrock-agent-runtime.eu-central-1.amazonaws.com", "bedrock", "eu-central-1"),
    ("sqs.eu-west-1.amazonaws.com", "sqs", "eu-west-1"),
    ("dynamodb-fips.us-gov-west-1.amazonaws.com", "dynamodb", "us-gov-west-1"),
    ("runtime.sagemaker.us-east-1.amazonaws.com", "sagemaker", "us-east-1"),
    ("email.us-east-1.amazonaws.com", "ses", "us-east-1"),
    ("sqs.cn-north-1.amazonaws.com.cn", "sqs", "cn-north-1"),
    ("sqs.us-east-1.api.aws", "sqs", "us-east-1"),
    ("iam.amazonaws.com", "iam", "us-east-1"),
    ("sts.amazonaws.com", "sts", "us-east-1"),
    ("sts.eu-west-1.amazonaws.com", "sts", "eu-west-1"),
    ("STS.AMAZONAWS.COM.", "sts", "us-east-1"),
]


@pytest.mark.parametrize(("host", "service", "region"), CASES)
def test_service_and_region_are_inferred_from_aws_hosts(host, service, region):
    assert infer_service_region(host) == (service, region)


@pytest.mark.parametrize("host", ["api.example.com", "127.0.0.1", "amazonaws.com.evil.com", "localhost"])
def test_custom_domains_are_not_guessed(host):
    assert infer_service_region(host) == (None, None)

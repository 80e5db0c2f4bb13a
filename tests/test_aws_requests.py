"""The exact requests of AWS mode, and dry runs that call nothing.

No AWS here and no stand-in either: these tests build requests from settings and
compare them with what they must be, key by key. tests/test_aws_moto.py sends the
same requests to moto's server on loopback (a local stand-in for AWS).
"""

from __future__ import annotations

import logging
import re

import boto3
import pytest
from omegaconf import OmegaConf

from lib import aws
from lib.aws import common
from lib.config import SettingsError, load_settings

ACCOUNT = "123456789012"
REGISTRY = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/adult-tabtransformer"
OUTPUTS = {
    "bucket": "adult-artifacts",
    "role_arn": f"arn:aws:iam::{ACCOUNT}:role/adult-sagemaker",
    "private_subnet_ids": ["subnet-0aaa", "subnet-0bbb"],
    "security_group_id": "sg-0123",
    "secret_arn": f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:adult-db-AbCdEf",
    "cluster_endpoint": "adult.cluster-abc.us-east-1.rds.amazonaws.com",
    "kms_key_arn": f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1111-2222",
}
RUN = "s3://adult-artifacts/adult-tabtransformer/run-7"


def sagemaker_settings(*overrides: str):
    settings = load_settings(
        [
            "mode=sagemaker",
            "budget=small",
            f"aws.images.account_id='{ACCOUNT}'",
            "aws.run_name=run-7",
            *overrides,
        ]
    )
    return aws.apply_stack_outputs(settings, OUTPUTS)


@pytest.fixture
def no_aws_calls(monkeypatch):
    """Any boto3 client creation fails the test: a dry run must need no AWS."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"an AWS client was created: {args} {kwargs}")

    monkeypatch.setattr(boto3.session.Session, "client", refuse)


def test_outputs_become_settings_and_the_secret_the_study_storage():
    settings = sagemaker_settings()
    assert settings.aws.stack_outputs.bucket == "adult-artifacts"
    assert list(settings.aws.stack_outputs.private_subnet_ids) == [
        "subnet-0aaa",
        "subnet-0bbb",
    ]
    assert settings.study.secret_id == OUTPUTS["secret_arn"]
    assert settings.study.secret_region == "us-east-1"


def test_tuning_job_request_carries_exactly_the_settings():
    settings = sagemaker_settings(
        "aws.training.instance_count=2",
        "aws.training.max_run_seconds=7200",
        "aws.training.max_wait_seconds=10800",
        "aws.training.max_retry_attempts=3",
    )
    request = aws.build_training_job_request(settings, "adult-tune-1", task="tune")
    assert request == {
        "TrainingJobName": "adult-tune-1",
        "RoleArn": OUTPUTS["role_arn"],
        "AlgorithmSpecification": {
            "TrainingImage": f"{REGISTRY}:train-0.1.0",
            "TrainingInputMode": "File",
        },
        "HyperParameters": {
            "task": "tune",
            "study_name": "adult-tabtransformer",
            "secret_arn": OUTPUTS["secret_arn"],
            "secret_region": "us-east-1",
            "seed": "42",
            "data.validation_fraction": "0.2",
            "data.fnlwgt": "drop",
            "study.objective": "log_loss",
            "threshold.policy": "max_f1",
            "threshold.cost_ratio": "1.0",
            "budget.n_trials": "2",
            "budget.timeout_minutes": "5",
            "budget.max_epochs": "2",
            "budget.early_stopping_patience": "1",
            "budget.pruner_warmup_epochs": "1",
            "budget.enqueue_defaults": "true",
        },
        "InputDataConfig": [
            {
                "ChannelName": "prepared",
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": f"{RUN}/prepared",
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
                "InputMode": "File",
            }
        ],
        "OutputDataConfig": {
            "S3OutputPath": f"{RUN}/models",
            "KmsKeyId": OUTPUTS["kms_key_arn"],
        },
        "ResourceConfig": {
            "InstanceType": "ml.p3.8xlarge",
            "InstanceCount": 2,
            "VolumeSizeInGB": 50,
            "VolumeKmsKeyId": OUTPUTS["kms_key_arn"],
        },
        "StoppingCondition": {
            "MaxRuntimeInSeconds": 7200,
            "MaxWaitTimeInSeconds": 10800,
        },
        "EnableManagedSpotTraining": True,
        "CheckpointConfig": {
            "S3Uri": f"{RUN}/checkpoints/adult-tune-1",
            "LocalPath": "/opt/ml/checkpoints",
        },
        "VpcConfig": {
            "SecurityGroupIds": ["sg-0123"],
            "Subnets": ["subnet-0aaa", "subnet-0bbb"],
        },
        "Environment": {"PYTHONUNBUFFERED": "1"},
        "Tags": [
            {"Key": "project", "Value": "adult-tabtransformer"},
            {"Key": "run", "Value": "run-7"},
        ],
        "RetryStrategy": {"MaximumRetryAttempts": 3},
    }


def test_on_demand_job_has_no_max_wait_and_no_retry_without_attempts():
    settings = sagemaker_settings(
        "aws.training.use_spot_instances=false",
        "aws.training.max_retry_attempts=0",
    )
    request = aws.build_training_job_request(settings, "adult-tune-2")
    assert request["EnableManagedSpotTraining"] is False
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 86400}
    assert "RetryStrategy" not in request


def test_final_job_is_one_on_demand_host_of_the_final_instance_type(no_aws_calls):
    request = aws.start_final_training_job(sagemaker_settings(), dry_run=True)
    assert request["HyperParameters"]["task"] == "final"
    assert request["ResourceConfig"]["InstanceType"] == "ml.p3.2xlarge"
    assert request["ResourceConfig"]["InstanceCount"] == 1
    assert request["EnableManagedSpotTraining"] is False


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["aws.training.max_run_seconds=7200", "aws.training.max_wait_seconds=3600"],
            r"max_wait_seconds \(3600\) is less than aws.training.max_run_seconds "
            r"\(7200\)",
        ),
        (["aws.training.instance_count=0"], "instance_count must be at least 1"),
        (["aws.training.max_retry_attempts=31"], "between 0 and 30"),
        (["aws.training.max_run_seconds=2419201"], "at most 2419200"),
    ],
)
def test_bad_training_settings_fail_before_any_call(no_aws_calls, overrides, message):
    # Loading the settings in sagemaker mode already refuses them ...
    with pytest.raises(SettingsError, match=message):
        sagemaker_settings(*overrides)
    # ... and the job launcher checks again, for settings changed after loading.
    settings = sagemaker_settings()
    for override in overrides:
        key, value = override.split("=", 1)
        OmegaConf.update(settings, key, int(value))
    with pytest.raises(aws.AwsModeError, match=message):
        aws.start_tuning_jobs(settings, dry_run=False)


def test_max_wait_below_max_run_is_fine_without_spot():
    settings = sagemaker_settings(
        "aws.training.use_spot_instances=false",
        "aws.training.final_use_spot_instances=false",
        "aws.training.max_run_seconds=7200",
        "aws.training.max_wait_seconds=60",
    )
    aws.check_training_settings(settings.aws.training)


def test_processing_job_request_runs_preprocessing_in_the_custom_image():
    request = aws.build_processing_job_request(sagemaker_settings(), "adult-prep-1")
    assert request == {
        "ProcessingJobName": "adult-prep-1",
        "RoleArn": OUTPUTS["role_arn"],
        "AppSpecification": {
            "ImageUri": f"{REGISTRY}:preprocess-0.1.0",
            "ContainerEntrypoint": ["python", "-m", "lib.aws.processing_entry"],
            "ContainerArguments": [
                "--input",
                "/opt/ml/processing/input/raw",
                "--output",
                "/opt/ml/processing/output",
                "--override",
                "seed=42",
                "--override",
                "data.validation_fraction=0.2",
                "--override",
                "data.fnlwgt='drop'",
            ],
        },
        "ProcessingInputs": [
            {
                "InputName": "raw",
                "S3Input": {
                    "S3Uri": f"{RUN}/raw",
                    "LocalPath": "/opt/ml/processing/input/raw",
                    "S3DataType": "S3Prefix",
                    "S3InputMode": "File",
                    "S3DataDistributionType": "FullyReplicated",
                },
            }
        ],
        "ProcessingOutputConfig": {
            "Outputs": [
                {
                    "OutputName": "prepared",
                    "S3Output": {
                        "S3Uri": f"{RUN}/prepared",
                        "LocalPath": "/opt/ml/processing/output/data",
                        "S3UploadMode": "EndOfJob",
                    },
                }
            ],
            "KmsKeyId": OUTPUTS["kms_key_arn"],
        },
        "ProcessingResources": {
            "ClusterConfig": {
                "InstanceCount": 1,
                "InstanceType": "ml.m5.xlarge",
                "VolumeSizeInGB": 30,
                "VolumeKmsKeyId": OUTPUTS["kms_key_arn"],
            }
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        "NetworkConfig": {
            "VpcConfig": {
                "SecurityGroupIds": ["sg-0123"],
                "Subnets": ["subnet-0aaa", "subnet-0bbb"],
            }
        },
        "Environment": {"PYTHONUNBUFFERED": "1"},
        "Tags": [
            {"Key": "project", "Value": "adult-tabtransformer"},
            {"Key": "run", "Value": "run-7"},
        ],
    }


def test_hosting_requests_pair_the_serving_image_with_the_artifact():
    settings = sagemaker_settings("aws.hosting.initial_instance_count=2")
    artifact = f"{RUN}/models/adult-final-1/output/model.tar.gz"
    model = aws.build_model_request(settings, "adult-model-1", artifact)
    config = aws.build_endpoint_config_request(
        settings, "adult-config-1", "adult-model-1"
    )
    endpoint = aws.build_endpoint_request(settings, "adult-config-1")
    tags = [
        {"Key": "project", "Value": "adult-tabtransformer"},
        {"Key": "run", "Value": "run-7"},
    ]
    assert model == {
        "ModelName": "adult-model-1",
        "ExecutionRoleArn": OUTPUTS["role_arn"],
        "PrimaryContainer": {
            "Image": f"{REGISTRY}:serve-0.1.0",
            "ModelDataUrl": artifact,
            "Mode": "SingleModel",
        },
        "EnableNetworkIsolation": True,
        "Tags": tags,
    }
    assert config == {
        "EndpointConfigName": "adult-config-1",
        "ProductionVariants": [
            {
                "VariantName": "AllTraffic",
                "ModelName": "adult-model-1",
                "InstanceType": "ml.m5.large",
                "InitialInstanceCount": 2,
                "InitialVariantWeight": 1.0,
            }
        ],
        "Tags": tags,
    }
    assert endpoint == {
        "EndpointName": "adult-tabtransformer",
        "EndpointConfigName": "adult-config-1",
        "Tags": tags,
    }


def test_a_full_image_uri_setting_wins_over_the_repository_tag():
    uri = "999999999999.dkr.ecr.eu-west-1.amazonaws.com/other:serve-x"
    settings = sagemaker_settings(f"aws.images.serve='{uri}'")
    assert common.image_uri(settings, "serve", dry_run=False) == uri
    assert (
        common.image_uri(settings, "train", dry_run=False) == f"{REGISTRY}:train-0.1.0"
    )


def test_dry_run_specifies_every_job_without_any_aws_call(no_aws_calls, caplog):
    # Fresh settings: no stack outputs, no account id; nothing may be asked of AWS.
    settings = load_settings(["mode=sagemaker", "budget=small", "aws.run_name=dry"])
    caplog.set_level(logging.INFO, logger="lib.aws")
    assert aws.read_stack_outputs(settings, dry_run=True) == {}
    stack = aws.deploy_stack(settings, dry_run=True)
    processing = aws.start_processing_job(settings, dry_run=True)
    tuning = aws.start_tuning_jobs(settings, dry_run=True)
    hosting = aws.deploy_endpoint(
        settings, aws.model_artifact_url(settings, "job", dry_run=True), dry_run=True
    )
    aws.delete_endpoint(settings, dry_run=True)
    aws.delete_stack(settings, dry_run=True)

    assert stack["StackName"] == "adult-tabtransformer"
    assert "AWS::RDS::DBCluster" in stack["TemplateBody"]
    assert processing["RoleArn"] == "<stack output role_arn>"
    assert tuning[0]["VpcConfig"]["Subnets"] == ["<stack output private_subnet_ids>"]
    assert tuning[0]["HyperParameters"]["secret_arn"] == "<stack output secret_arn>"
    assert tuning[0]["AlgorithmSpecification"]["TrainingImage"] == (
        "<account id>.dkr.ecr.us-east-1.amazonaws.com/adult-tabtransformer:train-0.1.0"
    )
    assert hosting["model"]["PrimaryContainer"]["ModelDataUrl"] == (
        "s3://<stack output bucket>/adult-tabtransformer/dry/models/job/output/"
        "model.tar.gz"
    )
    logged = caplog.text
    for action in (
        "would call CloudFormation CreateStack/UpdateStack",
        "would call SageMaker CreateProcessingJob",
        "would call SageMaker CreateTrainingJob",
        "would call SageMaker CreateModel",
        "would call SageMaker CreateEndpointConfig",
        "would call SageMaker CreateEndpoint",
        "would call CloudFormation DeleteStack",
    ):
        assert action in logged
    # The full specification is in the log, not a summary of it.
    assert '"MaxWaitTimeInSeconds": 172800' in logged
    assert '"LocalPath": "/opt/ml/checkpoints"' in logged


def test_several_tuning_jobs_get_distinct_valid_names(no_aws_calls):
    settings = sagemaker_settings("aws.training.job_count=3")
    names = [
        r["TrainingJobName"] for r in aws.start_tuning_jobs(settings, dry_run=True)
    ]
    assert len(set(names)) == 3
    for name in names:
        assert re.fullmatch(r"adult-tabtransformer-tune-\d{8}-\d{6}-\d", name)


def test_names_are_cut_to_what_sagemaker_accepts():
    name = common.unique_name("x" * 80, index=12)
    assert len(name) <= 63
    common.check_name(name)
    with pytest.raises(aws.AwsModeError, match="not a valid SageMaker name"):
        common.check_name("bad_name")


def test_jobs_need_the_stack_outputs_outside_a_dry_run():
    settings = load_settings(["mode=sagemaker"])
    with pytest.raises(aws.AwsModeError, match=r"aws\.stack_outputs\.\w+ is not set"):
        aws.build_training_job_request(settings, "adult-tune-3")

"""AWS mode against moto's server on loopback: a LOCAL STAND-IN for AWS, not AWS.

botocore validates every request against the real service models before it
leaves the process, and moto stores what it accepts, so these tests check that
the stack, processing, training and hosting requests are well formed and carry
the settings. moto runs no container and cannot create some stack resources;
where a test plays SageMaker's part, or a resource stands in for one moto lacks,
it says so.
"""

from __future__ import annotations

import io
import ipaddress
import json
import tarfile
import uuid
from pathlib import Path

import boto3
import polars as pl
import pytest
import requests
from botocore.exceptions import ClientError
from cfnlint.decode import decode_str

from lib import aws
from lib.aws import processing_entry
from lib.config import load_settings
from lib.storage import resolve_storage_url

REPO_ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = REPO_ROOT / "cloudformation" / "stack.yaml"
ACCOUNT = "123456789012"
# Resource types of the template that moto's CloudFormation cannot create.
NOT_IN_STAND_IN = {
    "AWS::RDS::DBCluster",
    "AWS::SecretsManager::Secret",
    "AWS::SecretsManager::SecretTargetAttachment",
    "AWS::S3::BucketPolicy",
    "AWS::EC2::SecurityGroupEgress",
}
# An Aurora instance cannot exist without its cluster.
DROPPED_WITH_THE_CLUSTER = {"DatabaseInstance"}
STAND_IN_DB_HOST = "127.0.0.1"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def stand_in_template(secret_arn: str) -> dict:
    """The template as far as moto can create it.

    Dropped: the resource types in NOT_IN_STAND_IN (and the Aurora instance).
    References to the secret become a secret made directly in moto's Secrets
    Manager; the cluster endpoint becomes a loopback address. ``Fn::Cidr``, which
    moto does not evaluate, is computed here from the VpcCidr default.
    """
    template, problems = decode_str(TEMPLATE.read_text())
    assert not problems, problems
    types = {r["Type"] for r in template["Resources"].values()}
    assert NOT_IN_STAND_IN <= types, "NOT_IN_STAND_IN names types the template lacks"
    dropped = {
        name
        for name, resource in template["Resources"].items()
        if resource["Type"] in NOT_IN_STAND_IN or name in DROPPED_WITH_THE_CLUSTER
    }
    vpc_cidr = template["Parameters"]["VpcCidr"]["Default"]
    replacements = {
        json.dumps({"Ref": "DatabaseSecret"}): secret_arn,
        json.dumps({"Fn::GetAtt": ["DatabaseCluster", "Endpoint.Address"]}): (
            STAND_IN_DB_HOST
        ),
        json.dumps({"Fn::GetAtt": ["DatabaseCluster", "Endpoint.Port"]}): "3306",
    }

    def rewrite(node):
        if isinstance(node, dict):
            key = json.dumps(node)
            if key in replacements:
                return replacements[key]
            if "Fn::Cidr" in node:
                _, count, host_bits = node["Fn::Cidr"]
                network = ipaddress.ip_network(vpc_cidr)
                blocks = network.subnets(new_prefix=32 - int(host_bits))
                return [
                    str(block)
                    for _, block in zip(range(int(count)), blocks, strict=False)
                ]
            return {k: rewrite(v) for k, v in node.items()}
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    resources = {
        name: rewrite(dict(resource))
        for name, resource in template["Resources"].items()
        if name not in dropped
    }
    leftover = [name for name in dropped if f'"{name}"' in json.dumps(resources)]
    assert not leftover, f"kept resources still refer to dropped {leftover}"
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Parameters": rewrite(dict(template["Parameters"])),
        "Conditions": rewrite(dict(template["Conditions"])),
        "Resources": resources,
        "Outputs": rewrite(dict(template["Outputs"])),
    }


def make_secret(secret_fields: dict) -> str:
    client = boto3.client("secretsmanager")
    response = client.create_secret(
        Name=unique("adult-db"), SecretString=json.dumps(secret_fields)
    )
    return response["ARN"]


def settings_with_outputs(bucket: str, *overrides: str):
    settings = load_settings(
        [
            "mode=sagemaker",
            "budget=small",
            f"aws.images.account_id='{ACCOUNT}'",
            "aws.poll_seconds=0.05",
            *overrides,
        ]
    )
    return aws.apply_stack_outputs(
        settings,
        {
            "bucket": bucket,
            "role_arn": f"arn:aws:iam::{ACCOUNT}:role/adult-sagemaker",
            "private_subnet_ids": ["subnet-0aaa", "subnet-0bbb"],
            "security_group_id": "sg-0123",
            "secret_arn": f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:db-Ab12",
            "cluster_endpoint": STAND_IN_DB_HOST,
            "kms_key_arn": f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1111",
        },
    )


def test_stack_from_the_template_gives_outputs_and_the_secret_a_storage_url(
    moto_endpoint, tmp_path
):
    fields = {
        "username": "optuna",
        "password": "s3cret-p4ss",
        "host": STAND_IN_DB_HOST,
        "port": 3306,
        "dbname": "optuna",
        "engine": "mysql",
    }
    secret_arn = make_secret(fields)
    template_path = tmp_path / "stand-in-stack.json"
    template_path.write_text(json.dumps(stand_in_template(secret_arn)))
    settings = load_settings(
        [
            "mode=sagemaker",
            f"aws.template_path='{template_path}'",
            f"aws.stack_name={unique('adult-stack')}",
            "aws.poll_seconds=0.05",
        ]
    )

    description = aws.deploy_stack(settings)
    outputs = aws.read_stack_outputs(settings)

    assert description["StackStatus"] == "CREATE_COMPLETE"
    vpc_id = {o["OutputKey"]: o["OutputValue"] for o in description["Outputs"]}["VpcId"]
    ec2 = boto3.client("ec2")
    subnets = ec2.describe_subnets(SubnetIds=outputs["private_subnet_ids"])["Subnets"]
    assert {s["CidrBlock"] for s in subnets} == {"10.40.32.0/20", "10.40.48.0/20"}
    assert {s["VpcId"] for s in subnets} == {vpc_id}
    assert len({s["AvailabilityZone"] for s in subnets}) == 2
    group = ec2.describe_security_groups(GroupIds=[outputs["security_group_id"]])
    assert group["SecurityGroups"][0]["VpcId"] == vpc_id
    boto3.client("s3").head_bucket(Bucket=outputs["bucket"])
    role_name = outputs["role_arn"].rsplit("/", 1)[-1]
    assert (
        boto3.client("iam").get_role(RoleName=role_name)["Role"]["Arn"]
        == (outputs["role_arn"])
    )
    assert outputs["secret_arn"] == secret_arn
    assert outputs["cluster_endpoint"] == STAND_IN_DB_HOST

    settings = aws.apply_stack_outputs(settings, outputs)
    url = resolve_storage_url(settings.study, tmp_path)
    assert url.reveal() == (
        "mysql+pymysql://optuna:s3cret-p4ss@127.0.0.1:3306/optuna?charset=utf8mb4"
    )
    assert "s3cret-p4ss" not in str(url)


def test_stack_with_a_protected_database_is_not_deleted_until_unprotected(
    moto_endpoint, tmp_path
):
    # moto cannot tear down the full template (it deletes the VPC before what is in
    # it), so the deletion path runs on a small stack with the same parameter.
    template = {
        "Parameters": {"DeletionProtection": {"Type": "String", "Default": "true"}},
        "Resources": {"Bucket": {"Type": "AWS::S3::Bucket"}},
    }
    template_path = tmp_path / "protected-stack.json"
    template_path.write_text(json.dumps(template))
    overrides = [
        "mode=sagemaker",
        f"aws.template_path='{template_path}'",
        f"aws.stack_name={unique('adult-stack')}",
        "aws.poll_seconds=0.05",
        "~aws.stack_parameters.NotebookInstanceType",
        "~aws.stack_parameters.DBInstanceClass",
        "~aws.stack_parameters.CodeRepositoryUrl",
    ]
    protected = load_settings(overrides)
    aws.deploy_stack(protected)

    with pytest.raises(aws.AwsModeError, match="DeletionProtection=false"):
        aws.delete_stack(protected)
    assert aws.describe_stack(protected)["StackStatus"] == "CREATE_COMPLETE"

    unprotected = load_settings(
        [*overrides, "aws.stack_parameters.DeletionProtection='false'"]
    )
    assert aws.deploy_stack(unprotected)["StackStatus"] == "UPDATE_COMPLETE"
    aws.delete_stack(unprotected)
    assert aws.describe_stack(unprotected) is None


def play_processing_container(request: dict, root: Path) -> None:
    """Do SageMaker's part of a processing job, which moto does not run: copy the
    inputs from S3, run the container's command on this machine with /opt/ml
    mapped under ``root``, and upload the outputs to S3."""
    s3 = boto3.client("s3")

    def local(path: str) -> Path:
        return root / path.lstrip("/")

    for channel in request["ProcessingInputs"]:
        bucket, prefix = aws.common.split_s3_url(channel["S3Input"]["S3Uri"])
        target = local(channel["S3Input"]["LocalPath"])
        target.mkdir(parents=True)
        for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]:
            name = item["Key"][len(prefix) :].lstrip("/")
            s3.download_file(bucket, item["Key"], str(target / name))
    app = request["AppSpecification"]
    assert app["ContainerEntrypoint"] == ["python", "-m", "lib.aws.processing_entry"]
    arguments = [
        str(local(a)) if a.startswith("/opt/ml/") else a
        for a in app["ContainerArguments"]
    ]
    assert processing_entry.main(arguments) == 0
    for output in request["ProcessingOutputConfig"]["Outputs"]:
        bucket, prefix = aws.common.split_s3_url(output["S3Output"]["S3Uri"])
        for path in local(output["S3Output"]["LocalPath"]).iterdir():
            s3.upload_file(str(path), bucket, f"{prefix}/{path.name}")


def test_processing_job_puts_the_prepared_data_where_training_reads_it(
    moto_endpoint, tmp_path
):
    bucket = unique("adult-artifacts")
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    settings = settings_with_outputs(bucket, "aws.run_name=prep")

    request = aws.start_processing_job(settings)

    job = boto3.client("sagemaker").describe_processing_job(
        ProcessingJobName=request["ProcessingJobName"]
    )
    assert job["AppSpecification"] == request["AppSpecification"]
    raw = s3.list_objects_v2(Bucket=bucket, Prefix="adult-tabtransformer/prep/raw/")
    assert sorted(o["Key"].rsplit("/", 1)[-1] for o in raw["Contents"]) == [
        "adult.data",
        "adult.test",
    ]
    play_processing_container(request, tmp_path)
    prefix = "adult-tabtransformer/prep/prepared/"
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]
    assert sorted(o["Key"][len(prefix) :] for o in listed) == [
        "row_ledger.json",
        "test.parquet",
        "train.parquet",
        "validation.parquet",
    ]
    ledger = json.loads(
        s3.get_object(Bucket=bucket, Key=f"{prefix}row_ledger.json")["Body"].read()
    )
    test_bytes = s3.get_object(Bucket=bucket, Key=f"{prefix}test.parquet")[
        "Body"
    ].read()
    assert pl.read_parquet(io.BytesIO(test_bytes)).height == ledger["split"]["test"]
    kept_train = ledger["files"][0]["records_kept"]
    assert ledger["split"]["train"] + ledger["split"]["validation"] == kept_train
    tuning = aws.build_training_job_request(settings, "adult-tune-prep")
    channel = tuning["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"]
    assert f"s3://{bucket}/{prefix}".rstrip("/") == channel


def test_tuning_jobs_in_the_stand_in_carry_the_settings(moto_endpoint):
    settings = settings_with_outputs(
        unique("adult-artifacts"),
        "aws.run_name=tune",
        "aws.training.job_count=2",
        "aws.training.instance_count=2",
        "aws.training.max_run_seconds=3600",
        "aws.training.max_wait_seconds=7200",
    )

    sent = aws.start_tuning_jobs(settings)
    names = [request["TrainingJobName"] for request in sent]
    described = aws.wait_for_training_jobs(settings, names)

    assert len(set(names)) == 2
    for request, job in zip(sent, described, strict=True):
        assert job["HyperParameters"] == request["HyperParameters"]
        assert job["HyperParameters"]["study_name"] == "adult-tabtransformer"
        assert job["HyperParameters"]["secret_arn"] == settings.study.secret_id
        assert job["EnableManagedSpotTraining"] is True
        assert job["StoppingCondition"] == {
            "MaxRuntimeInSeconds": 3600,
            "MaxWaitTimeInSeconds": 7200,
        }
        assert job["CheckpointConfig"] == {
            "S3Uri": (
                f"s3://{settings.aws.stack_outputs.bucket}/adult-tabtransformer/tune/"
                f"checkpoints/{request['TrainingJobName']}"
            ),
            "LocalPath": "/opt/ml/checkpoints",
        }
        assert job["VpcConfig"] == {
            "SecurityGroupIds": ["sg-0123"],
            "Subnets": ["subnet-0aaa", "subnet-0bbb"],
        }
        assert job["AlgorithmSpecification"]["TrainingImage"] == (
            f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/adult-tabtransformer:train-0.1.0"
        )
        assert job["ResourceConfig"]["InstanceType"] == "ml.p3.8xlarge"
        assert job["ResourceConfig"]["InstanceCount"] == 2
    assert aws.model_artifact_url(settings, names[0]).endswith("model.tar.gz")


def test_endpoint_is_deployed_invoked_and_deleted(moto_endpoint):
    endpoint_name = unique("adult-endpoint")
    settings = settings_with_outputs(
        unique("adult-artifacts"), f"aws.hosting.endpoint_name={endpoint_name}"
    )
    artifact = "s3://adult-artifacts/adult-tabtransformer/run/models/final/model.tar.gz"
    client = boto3.client("sagemaker")

    sent = aws.deploy_endpoint(settings, artifact)

    endpoint = client.describe_endpoint(EndpointName=endpoint_name)
    assert endpoint["EndpointStatus"] == "InService"
    assert (
        endpoint["EndpointConfigName"] == sent["endpoint_config"]["EndpointConfigName"]
    )
    model = client.describe_model(ModelName=sent["model"]["ModelName"])
    assert model["PrimaryContainer"]["Image"] == (
        f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/adult-tabtransformer:serve-0.1.0"
    )
    assert model["PrimaryContainer"]["ModelDataUrl"] == artifact
    config = client.describe_endpoint_config(
        EndpointConfigName=endpoint["EndpointConfigName"]
    )
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.m5.large"

    # The stand-in answers invocations with a result queued through moto's own API.
    answer = [{"probability": 0.81, "label": ">50K"}]
    queued = requests.post(
        f"{moto_endpoint}/moto-api/static/sagemaker/endpoint-results",
        json={
            "results": [{"Body": json.dumps(answer), "ContentType": "application/json"}]
        },
        timeout=10,
    )
    queued.raise_for_status()
    record = [52, "Self-emp-inc", 287927, "HS-grad", 9, "Married-civ-spouse",
              "Exec-managerial", "Wife", "White", "Female", 15024, 0, 40,
              "United-States"]  # fmt: skip
    assert aws.invoke_endpoint(settings, [record]) == answer

    aws.delete_endpoint(settings)
    with pytest.raises(ClientError):
        client.describe_endpoint(EndpointName=endpoint_name)
    with pytest.raises(ClientError):
        client.describe_model(ModelName=sent["model"]["ModelName"])


def tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def test_final_job_outputs_come_back_into_the_run_folder(moto_endpoint, tmp_path):
    bucket = unique("adult-artifacts")
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    settings = settings_with_outputs(bucket, "aws.run_name=final")

    request = aws.start_final_training_job(settings)
    name = request["TrainingJobName"]
    model_url = aws.model_artifact_url(settings, name)

    assert model_url == (
        f"s3://{bucket}/adult-tabtransformer/final/models/{name}/output/model.tar.gz"
    )
    # moto runs no container: put what the job would have uploaded where it goes.
    key = model_url.split(f"s3://{bucket}/", 1)[1]
    s3.put_object(
        Bucket=bucket, Key=key, Body=tarball({"manifest.json": b'{"format": 1}'})
    )
    s3.put_object(
        Bucket=bucket,
        Key=key.replace("model.tar.gz", "output.tar.gz"),
        Body=tarball({"metrics.json": b'{"n_records": 16281}'}),
    )
    aws.download_training_outputs(settings, name, tmp_path / "run")

    assert json.loads((tmp_path / "run/model/manifest.json").read_text()) == {
        "format": 1
    }
    assert json.loads((tmp_path / "run/metrics.json").read_text()) == {
        "n_records": 16281
    }

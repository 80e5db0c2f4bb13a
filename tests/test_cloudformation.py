"""cloudformation/stack.yaml: linted by cfn-lint and checkov, and built as designed.

checkov lives in its own environment (.venv-iac, from requirements-iac.lock)
because its pins conflict with the project's: ``make iac-env`` creates it. Its
test is skipped when that environment is missing, and fails instead under CI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cfnlint.decode import decode_str

from lib.aws.stack import OUTPUT_KEYS

REPO_ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = REPO_ROOT / "cloudformation" / "stack.yaml"
CHECKOV = REPO_ROOT / ".venv-iac" / "bin" / "checkov"
# Keep checkov off the network: no platform download, no update check.
CHECKOV_ENV = {"CKV_SKIP_PACKAGE_UPDATE_CHECK": "true", "BC_SKIP_MAPPING": "TRUE"}


@pytest.fixture(scope="module")
def template() -> dict:
    decoded, problems = decode_str(TEMPLATE.read_text())
    assert not problems, problems
    return decoded


def test_cfn_lint_finds_nothing():
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    result = subprocess.run(
        [str(cfn_lint), str(TEMPLATE)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_checkov_finds_no_failed_check():
    if not CHECKOV.exists():
        message = f"{CHECKOV} is missing: run `make iac-env`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    result = subprocess.run(
        [
            str(CHECKOV),
            "--file",
            str(TEMPLATE),
            "--framework",
            "cloudformation",
            "--skip-download",
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **CHECKOV_ENV},
    )
    report = json.loads(result.stdout)
    # Without the Prisma platform checkov knows no severities, so every failed
    # check counts, which is stricter than "no HIGH finding".
    failed = [
        f"{c['check_id']} {c['resource']}: {c['check_name']}"
        for c in report["results"]["failed_checks"]
    ]
    assert failed == []
    assert report["summary"]["passed"] >= 40
    for skipped in report["results"]["skipped_checks"]:
        comment = skipped["check_result"].get("suppress_comment")
        assert comment, f"{skipped['check_id']} is skipped without a reason"


def resources_of_type(template: dict, resource_type: str) -> dict:
    return {
        name: resource["Properties"]
        for name, resource in template["Resources"].items()
        if resource["Type"] == resource_type
    }


def test_aurora_is_a_supported_mysql8_engine_encrypted_and_private(template):
    cluster = resources_of_type(template, "AWS::RDS::DBCluster")["DatabaseCluster"]
    version = template["Parameters"]["DBEngineVersion"]["Default"]
    assert cluster["Engine"] == "aurora-mysql"
    assert cluster["EngineVersion"] == {"Ref": "DBEngineVersion"}
    # Aurora MySQL 3 is the MySQL 8.0-compatible line; 3.10 is a long-term release.
    assert re.fullmatch(r"8\.0\.mysql_aurora\.3\.10\.\d+", version)
    assert cluster["StorageEncrypted"] is True
    instances = resources_of_type(template, "AWS::RDS::DBInstance")
    assert [i["PubliclyAccessible"] for i in instances.values()] == [False]


def test_database_is_reachable_only_from_the_sagemaker_group(template):
    database = resources_of_type(template, "AWS::EC2::SecurityGroup")[
        "DatabaseSecurityGroup"
    ]
    ingress = database["SecurityGroupIngress"]
    assert len(ingress) == 1
    assert ingress[0]["SourceSecurityGroupId"] == {"Ref": "SageMakerSecurityGroup"}
    assert (ingress[0]["FromPort"], ingress[0]["ToPort"]) == (3306, 3306)
    assert "CidrIp" not in ingress[0]
    standalone = resources_of_type(template, "AWS::EC2::SecurityGroupIngress")
    assert standalone == {}


def test_two_public_and_two_private_subnets_in_two_zones_behind_a_nat(template):
    subnets = resources_of_type(template, "AWS::EC2::Subnet")
    assert sorted(subnets) == [
        "PrivateSubnetA",
        "PrivateSubnetB",
        "PublicSubnetA",
        "PublicSubnetB",
    ]
    zones = {
        name: s["AvailabilityZone"]["Fn::Select"][0] for name, s in subnets.items()
    }
    assert zones["PublicSubnetA"] == zones["PrivateSubnetA"] != zones["PrivateSubnetB"]
    assert all(s["MapPublicIpOnLaunch"] is False for s in subnets.values())
    nat = resources_of_type(template, "AWS::EC2::NatGateway")["NatGateway"]
    assert nat["SubnetId"] == {"Ref": "PublicSubnetA"}
    routes = resources_of_type(template, "AWS::EC2::Route")
    assert routes["PrivateDefaultRoute"]["NatGatewayId"] == {"Ref": "NatGateway"}
    assert routes["PublicDefaultRoute"]["GatewayId"] == {"Ref": "InternetGateway"}


def test_credentials_are_generated_into_a_secret_attached_to_the_cluster(template):
    secret = resources_of_type(template, "AWS::SecretsManager::Secret")[
        "DatabaseSecret"
    ]
    generated = secret["GenerateSecretString"]
    assert generated["GenerateStringKey"] == "password"
    shape = generated["SecretStringTemplate"]["Fn::Sub"]
    assert json.loads(
        shape.replace("${DBUsername}", "u").replace("${DBName}", "d")
    ) == {
        "username": "u",
        "dbname": "d",
    }
    attachment = resources_of_type(
        template, "AWS::SecretsManager::SecretTargetAttachment"
    )["DatabaseSecretAttachment"]
    # The attachment adds host, port and engine to username, password and dbname.
    assert attachment["TargetId"] == {"Ref": "DatabaseCluster"}
    assert attachment["TargetType"] == "AWS::RDS::DBCluster"


def test_outputs_hold_everything_the_notebooks_read(template):
    assert set(OUTPUT_KEYS) <= set(template["Outputs"])
    assert {"NotebookInstanceName", "VpcId", "PublicSubnetIds"} <= set(
        template["Outputs"]
    )


def lifecycle_script(template: dict) -> str:
    config = resources_of_type(
        template, "AWS::SageMaker::NotebookInstanceLifecycleConfig"
    )
    (hook,) = config["NotebookLifecycle"]["OnStart"]
    return hook["Content"]["Fn::Base64"]["Fn::Sub"].replace(
        "${AWS::StackName}", "adult-tabtransformer"
    )


def test_notebook_instance_is_private_and_builds_the_conda_env(template):
    notebook = resources_of_type(template, "AWS::SageMaker::NotebookInstance")[
        "NotebookInstance"
    ]
    assert notebook["DirectInternetAccess"] == "Disabled"
    assert notebook["SubnetId"] == {"Ref": "PrivateSubnetA"}
    assert notebook["InstanceType"] == {"Ref": "NotebookInstanceType"}
    script = lifecycle_script(template)
    assert "environment.yml" in script
    assert 'conda env create --quiet --prefix "$env_prefix" --file "$spec"' in script


def test_lifecycle_script_is_valid_shell(template, tmp_path):
    script = tmp_path / "on-start.sh"
    script.write_text(lifecycle_script(template))
    syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install -y shellcheck)")
    lint = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout

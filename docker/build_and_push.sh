#!/usr/bin/env bash
# Build one of the project's images and push it to Amazon ECR.
#
#   docker/build_and_push.sh TAG MODE REPOSITORY
#
# MODE picks docker/MODE.Dockerfile (preprocess, train or serve; "all" builds the
# three). The image is pushed as <account>.dkr.ecr.<region>.amazonaws.com/
# REPOSITORY:MODE-TAG, the name lib.aws expects from aws.images.repository and
# aws.images.tag. The repository is created (scan on push, KMS encryption) if it
# does not exist. Region: AWS_REGION, else AWS_DEFAULT_REGION, else the AWS CLI's.
#
# DRY_RUN=1 prints the commands instead of running them (the account is then
# AWS_ACCOUNT_ID, or a placeholder), so nothing is asked of AWS or Docker.
set -euo pipefail

readonly MODES=(preprocess train serve)
PROJECT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly PROJECT_ROOT

usage() {
    cat >&2 <<'USAGE'
usage: docker/build_and_push.sh TAG MODE REPOSITORY

  TAG         image tag suffix, e.g. 0.1.0 (letters, digits, . _ -)
  MODE        preprocess | train | serve | all
  REPOSITORY  ECR repository name, e.g. adult-tabtransformer

example: docker/build_and_push.sh 0.1.0 train adult-tabtransformer
USAGE
}

fail() {
    echo "error: $*" >&2
    usage
    exit 2
}

run() {
    if [[ "${DRY_RUN:-0}" == "1" ]]; then
        printf '+'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

require_tool() {
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "error: $1 is not installed or not on PATH; $2" >&2
        exit 3
    fi
}

if [[ $# -ne 3 ]]; then
    fail "expected 3 arguments (TAG MODE REPOSITORY), got $#"
fi
tag="$1"
mode="$2"
repository="$3"

if [[ ! "$tag" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,100}$ ]]; then
    fail "TAG '$tag' is not a valid image tag"
fi
if [[ ! "$repository" =~ ^[a-z0-9]+([._/-][a-z0-9]+)*$ ]]; then
    fail "REPOSITORY '$repository' is not a valid ECR repository name (lower case)"
fi
if [[ "$mode" == "all" ]]; then
    modes=("${MODES[@]}")
elif [[ " ${MODES[*]} " == *" $mode "* ]]; then
    modes=("$mode")
else
    fail "MODE '$mode' is not one of: ${MODES[*]} all"
fi
for each in "${modes[@]}"; do
    if [[ ! -f "$PROJECT_ROOT/docker/$each.Dockerfile" ]]; then
        echo "error: docker/$each.Dockerfile does not exist" >&2
        exit 2
    fi
done

if [[ "${DRY_RUN:-0}" == "1" ]]; then
    region="${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}"
    account="${AWS_ACCOUNT_ID:-<account-id>}"
else
    require_tool aws "install the AWS CLI v2 and configure credentials"
    require_tool docker "install Docker (a running engine is needed to build)"
    region="${AWS_REGION:-${AWS_DEFAULT_REGION:-$(aws configure get region || true)}}"
    if [[ -z "$region" ]]; then
        echo "error: no AWS region: set AWS_REGION (for example us-east-1)" >&2
        exit 2
    fi
    account="$(aws sts get-caller-identity --query Account --output text)"
fi
registry="$account.dkr.ecr.$region.amazonaws.com"

if [[ "${DRY_RUN:-0}" != "1" ]] \
    && ! aws ecr describe-repositories --region "$region" \
        --repository-names "$repository" >/dev/null 2>&1; then
    echo "creating ECR repository $repository in $region"
    aws ecr create-repository --region "$region" --repository-name "$repository" \
        --image-scanning-configuration scanOnPush=true \
        --encryption-configuration encryptionType=KMS >/dev/null
fi

if [[ "${DRY_RUN:-0}" == "1" ]]; then
    echo "+ aws ecr get-login-password --region $region | docker login --username AWS --password-stdin $registry"
else
    aws ecr get-login-password --region "$region" \
        | docker login --username AWS --password-stdin "$registry"
fi

for each in "${modes[@]}"; do
    image="$registry/$repository:$each-$tag"
    run docker build --platform linux/amd64 \
        --file "$PROJECT_ROOT/docker/$each.Dockerfile" \
        --tag "$image" "$PROJECT_ROOT"
    run docker push "$image"
    if [[ "${DRY_RUN:-0}" != "1" ]]; then
        echo "pushed $image"
    fi
done

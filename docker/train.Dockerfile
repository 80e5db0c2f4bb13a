# Training image: lib.sagemaker_training runs tuning trials or the final retrain as a
# SageMaker training job on GPU hosts (ml.p3.* by default).
# Build from the project root: docker/build_and_push.sh TAG train REPOSITORY
#
# Python 3.11 on Debian 12 (bookworm), the interpreter requirements.lock was made for.
# CUDA and cuDNN come as pinned pip wheels (tensorflow[and-cuda]); the host supplies
# only the NVIDIA driver, as SageMaker GPU instances do.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/opt/project \
    TF_CPP_MIN_LOG_LEVEL=1

WORKDIR /opt/project

# What training imports, at the exact versions of requirements.lock, plus the CUDA
# wheels of tensorflow[and-cuda] pinned in docker/train-gpu.lock.
COPY requirements.lock docker/train-gpu.lock /tmp/
RUN pip install --constraint /tmp/requirements.lock \
        --requirement /tmp/train-gpu.lock \
        "tensorflow[and-cuda]" keras optuna SQLAlchemy PyMySQL cryptography boto3 \
        polars numpy scikit-learn hydra-core omegaconf PyYAML \
    && rm /tmp/requirements.lock /tmp/train-gpu.lock

COPY lib/ lib/

# SageMaker starts the container as `<image> train`, as root, with /opt/ml owned by
# root; the entry point accepts and ignores that argument.
ENTRYPOINT ["python", "-m", "lib.sagemaker_training"]
CMD ["train"]

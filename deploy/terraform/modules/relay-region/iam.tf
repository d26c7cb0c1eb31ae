# Two roles, each with only what it uses:
#  - execution role (the ECS agent): pull the image, write the container logs, read the
#    secrets listed in var.secrets;
#  - task role (the containers): only the metrics sidecar calls AWS (EMF records into its
#    own log group, optional AMP remote write). The relay itself calls no AWS API.

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    sid     = "EcsTasksAssume"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }

    # Confused-deputy guard: only ECS acting for this account may assume the role.
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:ecs:${local.region}:${local.account_id}:*"]
    }
  }
}

resource "aws_iam_role" "execution" {
  name_prefix        = "${var.name}-relay-exec-"
  description        = "ECS agent role of the flagstream relay ${var.name}: image pull, logs, secrets"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = local.tags
}

data "aws_iam_policy_document" "execution" {
  # GetAuthorizationToken has no resource-level permissions; it only yields a registry login.
  statement {
    sid       = "EcrLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  dynamic "statement" {
    for_each = local.ecr_repository_arn == null ? [] : [local.ecr_repository_arn]
    content {
      sid       = "EcrPullRelayImage"
      actions   = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
      resources = [statement.value]
    }
  }

  statement {
    sid       = "WriteContainerLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.relay.arn}:log-stream:*"]
  }

  dynamic "statement" {
    for_each = length(var.secrets) == 0 ? [] : [1]
    content {
      sid       = "ReadRelaySecrets"
      actions   = ["secretsmanager:GetSecretValue", "ssm:GetParameters"]
      resources = distinct([for arn in values(var.secrets) : arn])
    }
  }

  dynamic "statement" {
    for_each = length(var.secrets_kms_key_arns) == 0 ? [] : [1]
    content {
      sid       = "DecryptRelaySecrets"
      actions   = ["kms:Decrypt"]
      resources = var.secrets_kms_key_arns
    }
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "relay-execution"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

resource "aws_iam_role" "task" {
  count = var.enable_metrics_sidecar ? 1 : 0

  name_prefix        = "${var.name}-relay-task-"
  description        = "Task role of the flagstream relay ${var.name}: metrics sidecar only"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = local.tags
}

data "aws_iam_policy_document" "task" {
  count = var.enable_metrics_sidecar ? 1 : 0

  statement {
    sid       = "WriteEmfRecords"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = [aws_cloudwatch_log_group.metrics[0].arn, "${aws_cloudwatch_log_group.metrics[0].arn}:log-stream:*"]
  }

  dynamic "statement" {
    for_each = var.amp_workspace_arn == null ? [] : [var.amp_workspace_arn]
    content {
      sid       = "RemoteWriteToAmp"
      actions   = ["aps:RemoteWrite"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_role_policy" "task" {
  count = var.enable_metrics_sidecar ? 1 : 0

  name   = "relay-metrics-sidecar"
  role   = aws_iam_role.task[0].id
  policy = data.aws_iam_policy_document.task[0].json
}

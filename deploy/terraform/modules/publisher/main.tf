data "aws_region" "current" {}
data "aws_partition" "current" {}
data "aws_caller_identity" "current" {}

locals {
  region     = data.aws_region.current.region
  partition  = data.aws_partition.current.partition
  account_id = data.aws_caller_identity.current.account_id
  tags       = merge(var.tags, { "flagstream:component" = "publisher", "flagstream:deployment" = var.name })

  listener_protocol = var.certificate_arn == null ? "TCP" : "TLS"
  endpoint_scheme   = local.listener_protocol == "TLS" ? "https" : "http"
  redis_subnet_ids  = coalesce(var.redis_subnet_ids, var.task_subnet_ids)

  cluster_arn  = var.ecs_cluster_arn != null ? var.ecs_cluster_arn : aws_ecs_cluster.this[0].arn
  service_name = "${var.name}-publisher"

  fargate_memory_range = {
    "256"  = { min = 512, max = 2048 }
    "512"  = { min = 1024, max = 4096 }
    "1024" = { min = 2048, max = 8192 }
    "2048" = { min = 4096, max = 16384 }
    "4096" = { min = 8192, max = 30720 }
  }

  publisher_environment = merge(
    var.extra_environment,
    {
      FLAGSTREAM_PUBLISHER_HOST  = "0.0.0.0"
      FLAGSTREAM_PUBLISHER_PORT  = tostring(var.publisher_port)
      FLAGSTREAM_KAFKA_BOOTSTRAP = var.kafka_bootstrap
      FLAGSTREAM_TOPIC           = var.topic
    },
  )

  # Secrets are injected by the ECS agent at task start; their values never appear in the
  # task definition.
  publisher_secrets = {
    FLAGSTREAM_ADMIN_TOKEN = var.admin_token_secret_arn
    FLAGSTREAM_REDIS_URL   = aws_secretsmanager_secret.redis_url.arn
  }

  ecr_match          = regexall("^([0-9]{12})\\.dkr\\.ecr\\.([a-z0-9-]+)\\.amazonaws\\.com(\\.cn)?/([^:@]+)", var.container_image)
  ecr_repository_arn = length(local.ecr_match) == 0 ? null : "arn:${local.partition}:ecr:${local.ecr_match[0][1]}:${local.ecr_match[0][0]}:repository/${local.ecr_match[0][3]}"
}

resource "aws_ecs_cluster" "this" {
  count = var.ecs_cluster_arn == null ? 1 : 0

  name = var.name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }

  tags = local.tags
}

resource "aws_cloudwatch_log_group" "publisher" {
  #checkov:skip=CKV_AWS_158:KMS encryption is opt-in through var.log_kms_key_arn; the publisher logs no tokens, SDK keys or flag payloads.
  #checkov:skip=CKV_AWS_338:Retention is an input (default 90 days); the audit trail is kept in Redis, not in logs.
  name              = "/flagstream/${var.name}/publisher"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.log_kms_key_arn
  tags              = local.tags
}

resource "aws_ecs_task_definition" "publisher" {
  family                   = local.service_name
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  execution_role_arn       = aws_iam_role.execution.arn
  # The publisher calls no AWS API: no task role.

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([{
    name         = "publisher"
    image        = var.container_image
    command      = var.container_command
    essential    = true
    portMappings = [{ name = "admin", containerPort = var.publisher_port, protocol = "tcp" }]
    environment  = [for k in sort(keys(local.publisher_environment)) : { name = k, value = local.publisher_environment[k] }]
    secrets      = [for k in sort(keys(local.publisher_secrets)) : { name = k, valueFrom = local.publisher_secrets[k] }]
    # In-flight writes finish (they are answered once Kafka acks, or queued in the outbox).
    stopTimeout            = 30
    linuxParameters        = { initProcessEnabled = true }
    readonlyRootFilesystem = true
    mountPoints            = [{ sourceVolume = "tmp", containerPath = "/tmp", readOnly = false }]
    healthCheck = {
      command     = ["CMD", "python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:${var.publisher_port}/livez', timeout=3)"]
      interval    = 15
      timeout     = 5
      retries     = 3
      startPeriod = 30
    }
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.publisher.name
        awslogs-region        = local.region
        awslogs-stream-prefix = "publisher"
        mode                  = "non-blocking"
        max-buffer-size       = "4m"
      }
    }
  }])

  tags = local.tags

  lifecycle {
    precondition {
      condition = (
        var.memory >= local.fargate_memory_range[tostring(var.cpu)].min &&
        var.memory <= local.fargate_memory_range[tostring(var.cpu)].max
      )
      error_message = "memory is not a valid Fargate size for the chosen cpu."
    }
  }
}

resource "aws_ecs_service" "publisher" {
  name                               = local.service_name
  cluster                            = local.cluster_arn
  task_definition                    = aws_ecs_task_definition.publisher.arn
  launch_type                        = "FARGATE"
  platform_version                   = "LATEST"
  desired_count                      = var.desired_count
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  health_check_grace_period_seconds  = 60
  availability_zone_rebalancing      = "ENABLED"

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.task_subnet_ids
    security_groups  = [aws_security_group.task.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.publisher.arn
    container_name   = "publisher"
    container_port   = var.publisher_port
  }

  enable_ecs_managed_tags = true
  propagate_tags          = "SERVICE"
  wait_for_steady_state   = var.wait_for_steady_state
  tags                    = local.tags

  depends_on = [aws_lb_listener.publisher, aws_iam_role_policy.execution]
}

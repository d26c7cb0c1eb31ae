locals {
  amp_remote_write_url = var.amp_workspace_arn == null ? null : format(
    "https://aps-workspaces.%s.amazonaws.com/workspaces/%s/api/v1/remote_write",
    split(":", var.amp_workspace_arn)[3],
    element(split("/", var.amp_workspace_arn), 1),
  )

  relay_container = {
    name      = "relay"
    image     = var.container_image
    command   = var.container_command
    essential = true

    portMappings = [{
      name          = "relay"
      containerPort = var.relay_port
      protocol      = "tcp"
    }]

    environment = [for k in sort(keys(local.relay_environment)) : { name = k, value = local.relay_environment[k] }]
    secrets     = [for k in sort(keys(var.secrets)) : { name = k, valueFrom = var.secrets[k] }]

    # SIGTERM -> drain over the drain window -> exit 0; SIGKILL only after stopTimeout.
    stopTimeout = local.stop_timeout_seconds
    # tini as PID 1 forwards SIGTERM to the relay and reaps its worker processes.
    linuxParameters = { initProcessEnabled = true }

    ulimits = [{ name = "nofile", softLimit = var.nofile_limit, hardLimit = var.nofile_limit }]

    readonlyRootFilesystem = true
    mountPoints            = [{ sourceVolume = "tmp", containerPath = "/tmp", readOnly = false }]

    # Liveness only (/livez): readiness is the load balancer's job (/readyz), and a relay that
    # is alive but catching up must not be killed.
    healthCheck = {
      command     = ["CMD", "python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:${var.relay_port}/livez', timeout=3)"]
      interval    = 15
      timeout     = 5
      retries     = 3
      startPeriod = 30
    }

    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.relay.name
        awslogs-region        = local.region
        awslogs-stream-prefix = "relay"
        # Never block the event loop on a slow log pipe; drop instead (bounded buffer).
        mode            = "non-blocking"
        max-buffer-size = "8m"
      }
    }
  }
}

module "metrics_sidecar" {
  source = "../prometheus-sidecar"
  count  = var.enable_metrics_sidecar ? 1 : 0

  region                  = local.region
  image                   = var.metrics_sidecar_image
  scrape_port             = var.relay_port
  metrics_path            = "/metrics"
  scrape_interval_seconds = 15
  job_name                = "flagstream-relay"
  cloudwatch_namespace    = var.metrics_namespace
  emf_log_group_name      = aws_cloudwatch_log_group.metrics[0].name
  dimensions = {
    ClusterName = local.cluster_name
    ServiceName = local.service_name
  }
  # Published as CloudWatch metrics (the rest of the series stays in the EMF log and, when
  # configured, in AMP): the scaling signal and what the runbook alarms on.
  cloudwatch_metric_selectors = [
    "^flagstream_relay_connections$",
    "^flagstream_relay_connections_rejected_total$",
    "^flagstream_relay_consumer_lag_records$",
    "^flagstream_relay_stale$",
  ]
  amp_remote_write_url = local.amp_remote_write_url
  log_configuration = {
    log_group_name = aws_cloudwatch_log_group.relay.name
    stream_prefix  = "metrics"
  }
}

resource "aws_ecs_task_definition" "relay" {
  family                   = "${var.name}-relay"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = var.enable_metrics_sidecar ? aws_iam_role.task[0].arn : null

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  volume {
    name = "tmp"
  }

  container_definitions = jsonencode(concat(
    [local.relay_container],
    [for m in module.metrics_sidecar : m.container_definition],
  ))

  tags = local.tags

  lifecycle {
    precondition {
      condition     = local.memory_ok
      error_message = "memory (${var.memory} MiB) is not valid for Fargate cpu ${var.cpu}: allowed ${local.fargate_memory_range[tostring(var.cpu)].min}-${local.fargate_memory_range[tostring(var.cpu)].max} MiB."
    }
    precondition {
      condition     = var.nofile_limit > var.max_connections_per_task + 1024
      error_message = "nofile_limit must exceed max_connections_per_task + 1024 (every stream is a socket)."
    }
    precondition {
      condition     = var.drain_window_seconds + 5 <= local.stop_timeout_seconds
      error_message = "Fargate allows at most 120 s between SIGTERM and SIGKILL: drain_window_seconds must be <= 115."
    }
  }
}

resource "aws_ecs_service" "relay" {
  name            = local.service_name
  cluster         = local.cluster_arn
  task_definition = aws_ecs_task_definition.relay.arn
  launch_type     = "FARGATE"
  # Autoscaling owns desired_count after creation (see lifecycle.ignore_changes).
  desired_count    = var.min_capacity
  platform_version = "LATEST"

  # Deploys start new tasks first (up to 2x) and stop old ones only once the new ones pass
  # /readyz, so capacity never drops and each old task drains its streams gracefully.
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  health_check_grace_period_seconds = var.health_check_grace_period_seconds
  availability_zone_rebalancing     = "ENABLED"

  network_configuration {
    subnets          = var.task_subnet_ids
    security_groups  = [aws_security_group.task.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.relay.arn
    container_name   = "relay"
    container_port   = var.relay_port
  }

  enable_ecs_managed_tags = true
  propagate_tags          = "SERVICE"
  wait_for_steady_state   = var.wait_for_steady_state
  tags                    = local.tags

  # The target group must be attached to the NLB before ECS registers tasks in it.
  depends_on = [aws_lb_listener.relay, aws_iam_role_policy.execution]

  lifecycle {
    ignore_changes = [desired_count]
  }
}

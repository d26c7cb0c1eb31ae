data "aws_region" "current" {}
data "aws_partition" "current" {}
data "aws_caller_identity" "current" {}

locals {
  region     = data.aws_region.current.region
  partition  = data.aws_partition.current.partition
  account_id = data.aws_caller_identity.current.account_id

  tags = merge(var.tags, { "flagstream:component" = "relay", "flagstream:fleet" = var.name })

  # --- drain alignment ----------------------------------------------------------------------
  # ECS stops a task behind a load balancer in this order: deregister the target (no new
  # streams; existing ones keep flowing for the deregistration delay), then SIGTERM, after
  # which the relay closes its streams spread over the drain window and exits 0; SIGKILL
  # comes stop_timeout seconds after SIGTERM. When SIGTERM comes first (Fargate Spot
  # reclaim, a failed task) the deregistration delay still outlasts the drain window, so
  # the NLB never cuts streams the relay is still spreading out.
  deregistration_delay_seconds = var.drain_window_seconds + var.drain_margin_seconds
  stop_timeout_seconds         = min(120, var.drain_window_seconds + var.drain_margin_seconds)

  # --- listener -----------------------------------------------------------------------------
  listener_protocol = var.certificate_arn == null ? "TCP" : "TLS"
  # TLS listeners have a fixed 350 s idle timeout; TCP listeners take the variable.
  effective_idle_timeout_seconds = local.listener_protocol == "TLS" ? 350 : var.tcp_idle_timeout_seconds
  endpoint_scheme                = local.listener_protocol == "TLS" ? "https" : "http"

  # --- task size ----------------------------------------------------------------------------
  # Valid Fargate memory (MiB) per CPU size.
  fargate_memory_range = {
    "256"   = { min = 512, max = 2048 }
    "512"   = { min = 1024, max = 4096 }
    "1024"  = { min = 2048, max = 8192 }
    "2048"  = { min = 4096, max = 16384 }
    "4096"  = { min = 8192, max = 30720 }
    "8192"  = { min = 16384, max = 61440 }
    "16384" = { min = 32768, max = 122880 }
  }
  memory_ok = (
    var.memory >= local.fargate_memory_range[tostring(var.cpu)].min &&
    var.memory <= local.fargate_memory_range[tostring(var.cpu)].max
  )

  relay_workers = coalesce(var.relay_workers, max(1, floor(var.cpu / 1024)))

  # The relay caps connections per worker process (docs/operations.md "Sizing"), so the
  # per-task budget is split across the workers.
  max_connections_per_worker = ceil(var.max_connections_per_task / local.relay_workers)

  # What the scaling policy compares the per-task gauge with. A relay's /metrics answers for
  # all its workers (relay/metrics.py, process group view), so the gauge is the task's total.
  connections_target = var.target_connections_per_task

  # --- relay configuration (DESIGN.md §8: FLAGSTREAM_* environment) ---------------------------
  relay_environment = merge(
    var.extra_environment,
    {
      FLAGSTREAM_RELAY_HOST               = "0.0.0.0" # the relay binds loopback by default
      FLAGSTREAM_RELAY_PORT               = tostring(var.relay_port)
      FLAGSTREAM_KAFKA_BOOTSTRAP          = var.kafka_bootstrap
      FLAGSTREAM_TOPIC                    = var.topic
      FLAGSTREAM_RELAY_WORKERS            = tostring(local.relay_workers)
      FLAGSTREAM_RELAY_HEARTBEAT_INTERVAL = tostring(var.heartbeat_interval_seconds)
      FLAGSTREAM_RELAY_DRAIN_WINDOW       = tostring(var.drain_window_seconds)
      FLAGSTREAM_RELAY_MAX_CONNECTIONS    = tostring(local.max_connections_per_worker)
    },
    var.max_connection_lifetime_seconds == null ? {} : {
      FLAGSTREAM_RELAY_MAX_CONNECTION_LIFETIME = tostring(var.max_connection_lifetime_seconds)
    },
  )

  # --- image pull permissions -----------------------------------------------------------------
  # An ECR image (private registry, any region, pull-through cache included) gets pull rights
  # on exactly its repository; any other registry needs none.
  ecr_match          = regexall("^([0-9]{12})\\.dkr\\.ecr\\.([a-z0-9-]+)\\.amazonaws\\.com(\\.cn)?/([^:@]+)", var.container_image)
  ecr_repository_arn = length(local.ecr_match) == 0 ? null : "arn:${local.partition}:ecr:${local.ecr_match[0][1]}:${local.ecr_match[0][0]}:repository/${local.ecr_match[0][3]}"

  cluster_arn  = var.ecs_cluster_arn != null ? var.ecs_cluster_arn : aws_ecs_cluster.this[0].arn
  cluster_name = element(split("/", local.cluster_arn), length(split("/", local.cluster_arn)) - 1)
  service_name = "${var.name}-relay"
}

# ---------------------------------------------------------------------------------------------
# Cluster and logs
# ---------------------------------------------------------------------------------------------

resource "aws_ecs_cluster" "this" {
  count = var.ecs_cluster_arn == null ? 1 : 0

  name = var.name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }

  tags = local.tags
}

resource "aws_cloudwatch_log_group" "relay" {
  #checkov:skip=CKV_AWS_158:KMS encryption is opt-in through var.log_kms_key_arn (the key policy must grant this region's CloudWatch Logs); logs carry no flag or SDK keys (DESIGN.md §7).
  #checkov:skip=CKV_AWS_338:Retention is an input (default 30 days); one year of relay chatter is rarely wanted.
  name              = "/flagstream/${var.name}/relay"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.log_kms_key_arn
  tags              = local.tags
}

# Embedded Metric Format records written by the metrics sidecar; CloudWatch extracts the
# declared metrics (flagstream_relay_connections among them) from these log events.
resource "aws_cloudwatch_log_group" "metrics" {
  #checkov:skip=CKV_AWS_158:KMS encryption is opt-in through var.log_kms_key_arn; the records hold metric values only.
  #checkov:skip=CKV_AWS_338:Metric records are only an ingestion path for CloudWatch metrics; short retention on purpose.
  count = var.enable_metrics_sidecar ? 1 : 0

  name              = "/flagstream/${var.name}/relay-metrics"
  retention_in_days = min(var.log_retention_days, 7)
  kms_key_id        = var.log_kms_key_arn
  tags              = local.tags
}

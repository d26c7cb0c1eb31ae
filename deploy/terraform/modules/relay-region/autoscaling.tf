# Two target-tracking policies on one scalable target. Application Auto Scaling scales OUT
# when any policy asks for it and scales IN only when every policy agrees, so:
#   - connections per task (the relay's real limit: sockets, buffers, fan-out writes) drives
#     the fleet size in steady state;
#   - CPU guards against fan-out bursts (a big flag change written to every stream) on a
#     fleet that has few but busy connections.

resource "aws_appautoscaling_target" "relay" {
  service_namespace  = "ecs"
  scalable_dimension = "ecs:service:DesiredCount"
  resource_id        = "service/${local.cluster_name}/${aws_ecs_service.relay.name}"
  min_capacity       = var.min_capacity
  max_capacity       = var.max_capacity
  tags               = local.tags

  lifecycle {
    precondition {
      condition     = var.max_capacity >= var.min_capacity
      error_message = "max_capacity must be >= min_capacity."
    }
    precondition {
      condition     = var.target_connections_per_task != null || var.target_cpu_percent != null
      error_message = "Set target_connections_per_task, target_cpu_percent, or both: a fleet without a scaling signal stays at min_capacity."
    }
    precondition {
      condition     = var.target_connections_per_task == null || var.enable_metrics_sidecar
      error_message = "Connection-based scaling reads flagstream_relay_connections from CloudWatch: it needs enable_metrics_sidecar = true."
    }
    precondition {
      condition     = var.target_connections_per_task == null || try(var.target_connections_per_task <= 0.8 * var.max_connections_per_task, false)
      error_message = "target_connections_per_task must be at most 80% of max_connections_per_task, or tasks answer 503 before autoscaling reacts."
    }
  }
}

resource "aws_appautoscaling_policy" "connections" {
  count = var.target_connections_per_task == null ? 0 : 1

  name               = "${var.name}-relay-connections"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.relay.service_namespace
  scalable_dimension = aws_appautoscaling_target.relay.scalable_dimension
  resource_id        = aws_appautoscaling_target.relay.resource_id

  target_tracking_scaling_policy_configuration {
    target_value       = local.connections_target
    scale_out_cooldown = var.scale_out_cooldown_seconds
    scale_in_cooldown  = var.scale_in_cooldown_seconds

    # Every task publishes its own gauge under the same {ClusterName, ServiceName}
    # dimensions; the Average statistic over them is the mean streams per task.
    customized_metric_specification {
      namespace   = var.metrics_namespace
      metric_name = "flagstream_relay_connections"
      statistic   = "Average"

      dimensions {
        name  = "ClusterName"
        value = local.cluster_name
      }
      dimensions {
        name  = "ServiceName"
        value = aws_ecs_service.relay.name
      }
    }
  }
}

resource "aws_appautoscaling_policy" "cpu" {
  count = var.target_cpu_percent == null ? 0 : 1

  name               = "${var.name}-relay-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.relay.service_namespace
  scalable_dimension = aws_appautoscaling_target.relay.scalable_dimension
  resource_id        = aws_appautoscaling_target.relay.resource_id

  target_tracking_scaling_policy_configuration {
    target_value       = var.target_cpu_percent
    scale_out_cooldown = var.scale_out_cooldown_seconds
    scale_in_cooldown  = var.scale_in_cooldown_seconds

    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}

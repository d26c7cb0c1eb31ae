# Alarms for the runbook (created only when var.alarm_topic_arn is set).

locals {
  metric_alarms_enabled = var.alarm_topic_arn != null && var.enable_metrics_sidecar
}

resource "aws_cloudwatch_metric_alarm" "healthy_tasks" {
  count = var.alarm_topic_arn == null ? 0 : 1

  alarm_name          = "${var.name}-relay-healthy-tasks-below-min"
  alarm_description   = "Fewer relay tasks pass /readyz than min_capacity: streams are crowding onto the rest (runbook: deploy/terraform/modules/relay-region/README.md)."
  namespace           = "AWS/NetworkELB"
  metric_name         = "HealthyHostCount"
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 5
  comparison_operator = "LessThanThreshold"
  threshold           = var.min_capacity
  treat_missing_data  = "breaching"
  dimensions = {
    LoadBalancer = aws_lb.relay.arn_suffix
    TargetGroup  = aws_lb_target_group.relay.arn_suffix
  }
  alarm_actions = [var.alarm_topic_arn]
  ok_actions    = [var.alarm_topic_arn]
  tags          = local.tags
}

resource "aws_cloudwatch_metric_alarm" "near_max_connections" {
  count = local.metric_alarms_enabled ? 1 : 0

  alarm_name          = "${var.name}-relay-near-max-connections"
  alarm_description   = "Average streams per task above 90% of max_connections_per_task: new SDKs will get 503. Raise max_capacity or task size."
  namespace           = var.metrics_namespace
  metric_name         = "flagstream_relay_connections"
  statistic           = "Average"
  period              = 60
  evaluation_periods  = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = floor(0.9 * var.max_connections_per_task)
  treat_missing_data  = "notBreaching"
  dimensions = {
    ClusterName = local.cluster_name
    ServiceName = local.service_name
  }
  alarm_actions = [var.alarm_topic_arn]
  ok_actions    = [var.alarm_topic_arn]
  tags          = local.tags
}

resource "aws_cloudwatch_metric_alarm" "stale" {
  count = local.metric_alarms_enabled ? 1 : 0

  alarm_name          = "${var.name}-relay-stale"
  alarm_description   = "A relay has reported itself stale (no successful Kafka fetch) for 5 minutes: SDKs get the last known state only. Check the region's Kafka path."
  namespace           = var.metrics_namespace
  metric_name         = "flagstream_relay_stale"
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  comparison_operator = "GreaterThanOrEqualToThreshold"
  threshold           = 1
  treat_missing_data  = "notBreaching"
  dimensions = {
    ClusterName = local.cluster_name
    ServiceName = local.service_name
  }
  alarm_actions = [var.alarm_topic_arn]
  ok_actions    = [var.alarm_topic_arn]
  tags          = local.tags
}

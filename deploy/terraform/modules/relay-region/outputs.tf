output "endpoint_url" {
  description = "Base URL SDKs use as their stream/polling base URI in this region (e.g. https://<nlb-dns>:443)."
  value       = "${local.endpoint_scheme}://${aws_lb.relay.dns_name}:${var.listener_port}"
}

output "lb_dns_name" {
  description = "DNS name of the region's network load balancer (alias target for latency-based DNS records)."
  value       = aws_lb.relay.dns_name
}

output "lb_zone_id" {
  description = "Route 53 hosted zone id of the load balancer (for alias records)."
  value       = aws_lb.relay.zone_id
}

output "lb_arn" {
  description = "ARN of the network load balancer."
  value       = aws_lb.relay.arn
}

output "target_group_arn" {
  description = "ARN of the relay target group (health check /readyz)."
  value       = aws_lb_target_group.relay.arn
}

output "listener_protocol" {
  description = "TLS when a certificate was given, TCP otherwise."
  value       = local.listener_protocol
}

output "lb_security_group_id" {
  description = "Security group of the load balancer."
  value       = aws_security_group.lb.id
}

output "task_security_group_id" {
  description = "Security group of the relay tasks: allow it on the Kafka brokers' security group."
  value       = aws_security_group.task.id
}

output "cluster_name" {
  description = "ECS cluster the relay service runs in."
  value       = local.cluster_name
}

output "service_name" {
  description = "ECS service name of the relay fleet."
  value       = aws_ecs_service.relay.name
}

output "task_definition_arn" {
  description = "Current task definition revision."
  value       = aws_ecs_task_definition.relay.arn
}

output "execution_role_arn" {
  description = "Execution role (image pull, logs, secrets)."
  value       = aws_iam_role.execution.arn
}

output "log_group_name" {
  description = "CloudWatch log group of the relay (and sidecar) container logs."
  value       = aws_cloudwatch_log_group.relay.name
}

output "metrics_namespace" {
  description = "CloudWatch namespace with flagstream_relay_connections and the other exported relay metrics (dimensions ClusterName, ServiceName)."
  value       = var.metrics_namespace
}

output "deregistration_delay_seconds" {
  description = "Target group deregistration delay: drain window + margin."
  value       = local.deregistration_delay_seconds
}

output "idle_timeout_seconds" {
  description = "Effective NLB idle timeout of the listener (350 for TLS)."
  value       = local.effective_idle_timeout_seconds
}

output "autoscaling" {
  description = "Scaling bounds and targets of this fleet."
  value = {
    min_capacity                = var.min_capacity
    max_capacity                = var.max_capacity
    target_connections_per_task = var.target_connections_per_task
    target_cpu_percent          = var.target_cpu_percent
    max_connections_per_task    = var.max_connections_per_task
  }
}

output "relay_environment" {
  description = "The non-secret FLAGSTREAM_* environment the relay containers get."
  value       = local.relay_environment
}

output "admin_endpoint_url" {
  description = "Base URL of the publisher admin API (internal load balancer)."
  value       = "${local.endpoint_scheme}://${aws_lb.publisher.dns_name}:${var.listener_port}"
}

output "lb_dns_name" {
  description = "DNS name of the internal admin load balancer."
  value       = aws_lb.publisher.dns_name
}

output "service_name" {
  description = "ECS service name of the publisher."
  value       = aws_ecs_service.publisher.name
}

output "task_security_group_id" {
  description = "Security group of the publisher tasks: allow it on the Kafka brokers."
  value       = aws_security_group.task.id
}

output "redis_primary_endpoint" {
  description = "Primary endpoint address of the Redis replication group (TLS, AUTH)."
  value       = aws_elasticache_replication_group.redis.primary_endpoint_address
}

output "redis_security_group_id" {
  description = "Security group of Redis (ingress from the publisher tasks only)."
  value       = aws_security_group.redis.id
}

output "redis_url_secret_arn" {
  description = "Secrets Manager secret holding FLAGSTREAM_REDIS_URL."
  value       = aws_secretsmanager_secret.redis_url.arn
}

output "log_group_name" {
  description = "CloudWatch log group of the publisher."
  value       = aws_cloudwatch_log_group.publisher.name
}

output "publisher_environment" {
  description = "The non-secret FLAGSTREAM_* environment the publisher gets (secrets: FLAGSTREAM_ADMIN_TOKEN, FLAGSTREAM_REDIS_URL)."
  value       = local.publisher_environment
}

output "container_definition" {
  description = "ECS container definition (an object, to be put in the task's container_definitions list) of the collector sidecar."
  value       = local.container_definition
}

output "collector_config_yaml" {
  description = "The rendered OpenTelemetry collector configuration (scrape, EMF export, optional AMP remote write)."
  value       = local.collector_config_yaml
}

output "cloudwatch_namespace" {
  description = "CloudWatch namespace the exported metrics land in."
  value       = var.cloudwatch_namespace
}

output "cloudwatch_dimensions" {
  description = "The CloudWatch dimensions (name => value) every exported metric carries; use them in alarms and scaling policies."
  value       = var.dimensions
}

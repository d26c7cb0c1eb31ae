output "relay_endpoints" {
  description = "Relay base URL per region (what SDKs in or near that region use as stream and polling URI)."
  value       = { for region, relay in local.relays : region => relay.endpoint_url }
}

output "relay_fleets" {
  description = "Per region: ECS cluster/service, scaling bounds and the CloudWatch namespace of the relay metrics."
  value = {
    for region, relay in local.relays : region => {
      cluster_name      = relay.cluster_name
      service_name      = relay.service_name
      autoscaling       = relay.autoscaling
      metrics_namespace = relay.metrics_namespace
      log_group_name    = relay.log_group_name
    }
  }
}

output "relay_task_security_groups" {
  description = "Relay task security group per region: allow each on its Kafka cluster's brokers."
  value       = { for region, relay in local.relays : region => relay.task_security_group_id }
}

output "global_relay_url" {
  description = "Latency-routed hostname for all regions (null when var.dns is not set)."
  value       = var.dns == null ? null : "https://${var.dns.name}"
}

output "publisher_admin_url" {
  description = "Internal URL of the publisher admin API in the home region."
  value       = module.publisher.admin_endpoint_url
}

output "publisher_redis_endpoint" {
  description = "Primary endpoint of the publisher's Redis (home region)."
  value       = module.publisher.redis_primary_endpoint
}

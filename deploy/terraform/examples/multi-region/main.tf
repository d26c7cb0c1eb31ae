locals {
  # Short, stable suffix per region for resource names (NLB names are limited to 32 chars).
  short_names = {
    "us-east-1"      = "use1"
    "eu-west-1"      = "euw1"
    "ap-southeast-1" = "apse1"
  }
}

# ---------------------------------------------------------------------------------------------
# Relay fleets: one module block per provider alias, each picking its region out of
# var.regions with for_each (zero or one instance). Keep the blocks identical except for the
# region and the alias; check.sh's contract test verifies that.
# ---------------------------------------------------------------------------------------------

module "relay_us_east_1" {
  source   = "../../modules/relay-region"
  for_each = { for region, cfg in var.regions : region => cfg if region == "us-east-1" }
  providers = {
    aws = aws.us_east_1
  }

  name                        = "${var.project}-${local.short_names[each.key]}"
  container_image             = coalesce(each.value.image, var.container_image)
  topic                       = var.topic
  vpc_id                      = each.value.vpc_id
  task_subnet_ids             = each.value.task_subnet_ids
  lb_subnet_ids               = each.value.lb_subnet_ids
  certificate_arn             = each.value.certificate_arn
  kafka_bootstrap             = each.value.kafka_bootstrap
  kafka_cidrs                 = each.value.kafka_cidrs
  kafka_security_group_ids    = each.value.kafka_security_group_ids
  min_capacity                = each.value.min_capacity
  max_capacity                = each.value.max_capacity
  cpu                         = each.value.cpu
  memory                      = each.value.memory
  relay_workers               = each.value.relay_workers
  max_connections_per_task    = each.value.max_connections_per_task
  target_connections_per_task = each.value.target_connections
  target_cpu_percent          = each.value.target_cpu_percent
  alarm_topic_arn             = each.value.alarm_topic_arn
  enable_deletion_protection  = var.enable_deletion_protection
}

module "relay_eu_west_1" {
  source   = "../../modules/relay-region"
  for_each = { for region, cfg in var.regions : region => cfg if region == "eu-west-1" }
  providers = {
    aws = aws.eu_west_1
  }

  name                        = "${var.project}-${local.short_names[each.key]}"
  container_image             = coalesce(each.value.image, var.container_image)
  topic                       = var.topic
  vpc_id                      = each.value.vpc_id
  task_subnet_ids             = each.value.task_subnet_ids
  lb_subnet_ids               = each.value.lb_subnet_ids
  certificate_arn             = each.value.certificate_arn
  kafka_bootstrap             = each.value.kafka_bootstrap
  kafka_cidrs                 = each.value.kafka_cidrs
  kafka_security_group_ids    = each.value.kafka_security_group_ids
  min_capacity                = each.value.min_capacity
  max_capacity                = each.value.max_capacity
  cpu                         = each.value.cpu
  memory                      = each.value.memory
  relay_workers               = each.value.relay_workers
  max_connections_per_task    = each.value.max_connections_per_task
  target_connections_per_task = each.value.target_connections
  target_cpu_percent          = each.value.target_cpu_percent
  alarm_topic_arn             = each.value.alarm_topic_arn
  enable_deletion_protection  = var.enable_deletion_protection
}

module "relay_ap_southeast_1" {
  source   = "../../modules/relay-region"
  for_each = { for region, cfg in var.regions : region => cfg if region == "ap-southeast-1" }
  providers = {
    aws = aws.ap_southeast_1
  }

  name                        = "${var.project}-${local.short_names[each.key]}"
  container_image             = coalesce(each.value.image, var.container_image)
  topic                       = var.topic
  vpc_id                      = each.value.vpc_id
  task_subnet_ids             = each.value.task_subnet_ids
  lb_subnet_ids               = each.value.lb_subnet_ids
  certificate_arn             = each.value.certificate_arn
  kafka_bootstrap             = each.value.kafka_bootstrap
  kafka_cidrs                 = each.value.kafka_cidrs
  kafka_security_group_ids    = each.value.kafka_security_group_ids
  min_capacity                = each.value.min_capacity
  max_capacity                = each.value.max_capacity
  cpu                         = each.value.cpu
  memory                      = each.value.memory
  relay_workers               = each.value.relay_workers
  max_connections_per_task    = each.value.max_connections_per_task
  target_connections_per_task = each.value.target_connections
  target_cpu_percent          = each.value.target_cpu_percent
  alarm_topic_arn             = each.value.alarm_topic_arn
  enable_deletion_protection  = var.enable_deletion_protection
}

locals {
  relays = merge(
    module.relay_us_east_1,
    module.relay_eu_west_1,
    module.relay_ap_southeast_1,
  )
}

# ---------------------------------------------------------------------------------------------
# Publisher and Redis in the home region (us-east-1), writing to the central Kafka cluster.
# ---------------------------------------------------------------------------------------------

module "publisher" {
  source = "../../modules/publisher"
  providers = {
    aws    = aws.us_east_1
    random = random
  }

  name                       = "${var.project}-home"
  container_image            = var.container_image
  topic                      = var.topic
  vpc_id                     = var.publisher.vpc_id
  task_subnet_ids            = var.publisher.task_subnet_ids
  admin_cidrs                = var.publisher.admin_cidrs
  certificate_arn            = var.publisher.certificate_arn
  kafka_bootstrap            = var.publisher.kafka_bootstrap
  kafka_cidrs                = var.publisher.kafka_cidrs
  kafka_security_group_ids   = var.publisher.kafka_security_group_ids
  admin_token_secret_arn     = var.publisher.admin_token_secret_arn
  redis_node_type            = var.publisher.redis_node_type
  redis_replicas             = var.publisher.redis_replicas
  enable_deletion_protection = var.enable_deletion_protection
}

# ---------------------------------------------------------------------------------------------
# Optional global hostname: latency-based alias records, one per region, each evaluating its
# NLB's target health, so SDKs resolve to the nearest region that has ready relays.
# ---------------------------------------------------------------------------------------------

resource "aws_route53_record" "relay" {
  #checkov:skip=CKV2_AWS_23:Alias to each region's relay NLB, passed through module outputs that checkov cannot follow.
  for_each = var.dns == null ? {} : local.relays
  provider = aws.us_east_1 # Route 53 is global; any provider will do

  zone_id        = var.dns.zone_id
  name           = var.dns.name
  type           = "A"
  set_identifier = each.key

  latency_routing_policy {
    region = each.key
  }

  alias {
    name                   = each.value.lb_dns_name
    zone_id                = each.value.lb_zone_id
    evaluate_target_health = true
  }
}

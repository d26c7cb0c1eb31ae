variable "project" {
  type        = string
  description = "Prefix of every fleet name (the region suffix is added per fleet)."
  default     = "flagstream"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,12}$", var.project))
    error_message = "project must be 2-13 chars of lowercase letters, digits and '-'."
  }
}

variable "container_image" {
  type        = string
  description = "flagstream image (publisher and relays), pinned to a tag or digest. Replicate it to each region's ECR (or use a pull-through cache) so tasks never pull cross-region."

  validation {
    condition     = can(regex("[:@]", var.container_image)) && !endswith(var.container_image, ":latest")
    error_message = "container_image must be pinned to an explicit tag or digest."
  }
}

variable "topic" {
  type        = string
  description = "Compacted state topic shared by the publisher and every relay."
  default     = "flagstream.state"

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]{1,249}$", var.topic))
    error_message = "topic must be 1-249 chars of [A-Za-z0-9._-]."
  }
}

variable "regions" {
  type = map(object({
    vpc_id          = string
    task_subnet_ids = list(string)
    lb_subnet_ids   = list(string)
    # Kafka this region's relays read: a regional replica (MirrorMaker 2 / MSK Replicator)
    # or the central cluster over peering/Transit Gateway. See README trade-off.
    kafka_bootstrap          = string
    kafka_cidrs              = optional(list(string), [])
    kafka_security_group_ids = optional(list(string), [])
    certificate_arn          = string           # TLS on the public NLB: SDK keys travel in headers
    image                    = optional(string) # per-region image (regional ECR replica); defaults to var.container_image
    min_capacity             = optional(number, 2)
    max_capacity             = optional(number, 10)
    cpu                      = optional(number, 1024)
    memory                   = optional(number, 2048)
    relay_workers            = optional(number)
    max_connections_per_task = optional(number, 20000)
    target_connections       = optional(number, 8000)
    target_cpu_percent       = optional(number, 60)
    alarm_topic_arn          = optional(string)
  }))
  description = "Relay fleets by AWS region name. Each key must have a provider alias and module block (see providers.tf); per-region capacity (min/max), task size (cpu/memory) and Kafka endpoint."

  validation {
    condition     = length(var.regions) >= 1 && alltrue([for r in keys(var.regions) : contains(["us-east-1", "eu-west-1", "ap-southeast-1"], r)])
    error_message = "regions keys must be among the regions wired in providers.tf: us-east-1, eu-west-1, ap-southeast-1 (add a provider alias and module block to support another)."
  }

  validation {
    condition     = alltrue([for r in values(var.regions) : r.min_capacity >= 1 && r.max_capacity >= r.min_capacity])
    error_message = "Every region needs 1 <= min_capacity <= max_capacity."
  }
}

variable "publisher" {
  type = object({
    vpc_id                   = string
    task_subnet_ids          = list(string)
    admin_cidrs              = list(string)
    kafka_bootstrap          = string
    kafka_cidrs              = optional(list(string), [])
    kafka_security_group_ids = optional(list(string), [])
    admin_token_secret_arn   = string
    certificate_arn          = optional(string)
    redis_node_type          = optional(string, "cache.r7g.large")
    redis_replicas           = optional(number, 1)
  })
  description = "The publisher and its Redis, in the home region (us-east-1 in this example, the aws.us_east_1 provider). It writes to the central Kafka cluster."
}

variable "dns" {
  type = object({
    zone_id = string
    name    = string
  })
  description = "Optional Route 53 public zone and record name (e.g. relay.example.com) for one global relay hostname with latency-based routing to the nearest healthy region. Null = no DNS records."
  default     = null
}

variable "enable_deletion_protection" {
  type        = bool
  description = "Deletion protection of the load balancers (turn off only for throw-away environments)."
  default     = true
}

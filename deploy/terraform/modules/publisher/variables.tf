# ---------------------------------------------------------------------------------------------
# Identity and network
# ---------------------------------------------------------------------------------------------

variable "name" {
  type        = string
  description = "Short name of the publisher deployment; prefixes every resource (e.g. 'flagstream-home')."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,18}[a-z0-9]$", var.name))
    error_message = "name must be 2-20 chars of lowercase letters, digits and '-', starting with a letter."
  }
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource that supports them."
  default     = {}
}

variable "vpc_id" {
  type        = string
  description = "VPC of the home region the publisher, its load balancer and Redis live in."

  validation {
    condition     = can(regex("^vpc-[0-9a-f]{8,17}$", var.vpc_id))
    error_message = "vpc_id must be a VPC id (vpc-...)."
  }
}

variable "task_subnet_ids" {
  type        = list(string)
  description = "Private subnets (two or more zones) for the publisher tasks and its internal load balancer."

  validation {
    condition     = length(var.task_subnet_ids) >= 2 && alltrue([for s in var.task_subnet_ids : can(regex("^subnet-[0-9a-f]{8,17}$", s))])
    error_message = "task_subnet_ids needs at least two subnet ids (subnet-...)."
  }
}

variable "redis_subnet_ids" {
  type        = list(string)
  description = "Subnets for the Redis replication group (two or more zones for Multi-AZ). Null reuses task_subnet_ids."
  default     = null

  validation {
    condition     = var.redis_subnet_ids == null || try(length(var.redis_subnet_ids) >= 2, false)
    error_message = "redis_subnet_ids must be null or hold at least two subnet ids."
  }
}

variable "admin_cidrs" {
  type        = list(string)
  description = "IPv4 CIDR blocks allowed to call the admin API (operators' VPN, CI runners). The load balancer is always internal."

  validation {
    condition     = length(var.admin_cidrs) >= 1 && alltrue([for c in var.admin_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "admin_cidrs must be a non-empty list of valid IPv4 CIDR blocks, not 0.0.0.0/0."
  }
}

variable "https_egress_cidrs" {
  type        = list(string)
  description = "Where tasks may open HTTPS (443): ECR, CloudWatch Logs, Secrets Manager (narrow to VPC endpoint CIDRs if you use them)."
  default     = ["0.0.0.0/0"]

  validation {
    condition     = alltrue([for c in var.https_egress_cidrs : can(cidrhost(c, 0))])
    error_message = "https_egress_cidrs must contain valid IPv4 CIDR blocks."
  }
}

variable "listener_port" {
  type        = number
  description = "Port of the admin API on the internal load balancer."
  default     = 443

  validation {
    condition     = var.listener_port >= 1 && var.listener_port <= 65535
    error_message = "listener_port must be a TCP port (1-65535)."
  }
}

variable "certificate_arn" {
  type        = string
  description = "ACM certificate for TLS on the admin API listener (recommended: the admin token is a bearer token). Null = plain TCP inside the VPC."
  default     = null

  validation {
    condition     = var.certificate_arn == null || can(regex("^arn:aws[a-z-]*:acm:", var.certificate_arn))
    error_message = "certificate_arn must be an ACM certificate ARN or null."
  }
}

# ---------------------------------------------------------------------------------------------
# Publisher container
# ---------------------------------------------------------------------------------------------

variable "container_image" {
  type        = string
  description = "Container image with flagstream, pinned to a tag or digest (the same image as the relays)."

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9._/:-]*[:@][A-Za-z0-9._:-]+$", var.container_image)) && !endswith(var.container_image, ":latest")
    error_message = "container_image must be pinned to an explicit tag or digest (not :latest)."
  }
}

variable "container_command" {
  type        = list(string)
  description = "Arguments to the image's entrypoint (`flagstream`, see the repository's Dockerfile) that start the publisher."
  default     = ["publisher"]

  validation {
    condition     = length(var.container_command) >= 1
    error_message = "container_command must not be empty."
  }
}

variable "publisher_port" {
  type        = number
  description = "Port the publisher listens on inside the task (FLAGSTREAM_PUBLISHER_PORT)."
  default     = 8031

  validation {
    condition     = var.publisher_port >= 1024 && var.publisher_port <= 65535
    error_message = "publisher_port must be an unprivileged TCP port (1024-65535)."
  }
}

variable "kafka_bootstrap" {
  type        = string
  description = "Bootstrap servers of the Kafka cluster the publisher writes to (the central/home cluster)."

  validation {
    condition     = alltrue([for h in split(",", var.kafka_bootstrap) : can(regex("^[A-Za-z0-9.-]+:[0-9]{1,5}$", trimspace(h)))])
    error_message = "kafka_bootstrap must be host:port[,host:port...]."
  }
}

variable "topic" {
  type        = string
  description = "Compacted state topic (FLAGSTREAM_TOPIC); must match the relays'."
  default     = "flagstream.state"

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]{1,249}$", var.topic))
    error_message = "topic must be 1-249 chars of [A-Za-z0-9._-]."
  }
}

variable "kafka_port_range" {
  type = object({
    from = number
    to   = number
  })
  description = "TCP port range of the Kafka brokers (tasks' egress rule)."
  default     = { from = 9092, to = 9098 }

  validation {
    condition     = var.kafka_port_range.from >= 1 && var.kafka_port_range.to <= 65535 && var.kafka_port_range.from <= var.kafka_port_range.to
    error_message = "kafka_port_range must satisfy 1 <= from <= to <= 65535."
  }
}

variable "kafka_cidrs" {
  type        = list(string)
  description = "CIDR blocks of the Kafka brokers. Give this or kafka_security_group_ids."
  default     = []

  validation {
    condition     = alltrue([for c in var.kafka_cidrs : can(cidrhost(c, 0))])
    error_message = "kafka_cidrs must contain valid IPv4 CIDR blocks."
  }
}

variable "kafka_security_group_ids" {
  type        = list(string)
  description = "Security groups of the Kafka brokers."
  default     = []

  validation {
    condition     = alltrue([for s in var.kafka_security_group_ids : can(regex("^sg-[0-9a-f]{8,17}$", s))])
    error_message = "kafka_security_group_ids must contain security group ids (sg-...)."
  }
}

variable "admin_token_secret_arn" {
  type        = string
  description = "Secrets Manager secret holding the admin bearer token (FLAGSTREAM_ADMIN_TOKEN). Created and rotated outside Terraform so the token never enters the state."

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:.+$", var.admin_token_secret_arn))
    error_message = "admin_token_secret_arn must be a Secrets Manager secret ARN."
  }
}

variable "secrets_kms_key_arn" {
  type        = string
  description = "Customer-managed KMS key for the Redis URL secret this module creates and for the admin token secret (execution role gets kms:Decrypt on it). Null = AWS managed key."
  default     = null

  validation {
    condition     = var.secrets_kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:", var.secrets_kms_key_arn))
    error_message = "secrets_kms_key_arn must be a KMS key ARN or null."
  }
}

variable "extra_environment" {
  type        = map(string)
  description = "Additional FLAGSTREAM_* environment variables for the publisher (non-secret)."
  default     = {}

  validation {
    condition     = alltrue([for k in keys(var.extra_environment) : can(regex("^FLAGSTREAM_[A-Z0-9_]+$", k))])
    error_message = "extra_environment keys must be FLAGSTREAM_* variable names."
  }
}

variable "desired_count" {
  type        = number
  description = "Publisher tasks. Writes are serialised in Redis (Lua), so two tasks give availability across a zone failure; the admin API is low-traffic and is not autoscaled."
  default     = 2

  validation {
    condition     = var.desired_count >= 1 && var.desired_count <= 10
    error_message = "desired_count must be between 1 and 10."
  }
}

variable "cpu" {
  type        = number
  description = "Fargate task CPU units."
  default     = 512

  validation {
    condition     = contains([256, 512, 1024, 2048, 4096], var.cpu)
    error_message = "cpu must be one of 256, 512, 1024, 2048, 4096."
  }
}

variable "memory" {
  type        = number
  description = "Fargate task memory in MiB (valid for the chosen cpu)."
  default     = 1024

  validation {
    condition     = var.memory >= 512 && var.memory <= 30720 && var.memory % 512 == 0
    error_message = "memory must be a multiple of 512 MiB between 512 and 30720."
  }
}

variable "cpu_architecture" {
  type        = string
  description = "X86_64 or ARM64."
  default     = "X86_64"

  validation {
    condition     = contains(["X86_64", "ARM64"], var.cpu_architecture)
    error_message = "cpu_architecture must be X86_64 or ARM64."
  }
}

variable "ecs_cluster_arn" {
  type        = string
  description = "Existing ECS cluster (e.g. the home region's relay cluster). Null creates one."
  default     = null

  validation {
    condition     = var.ecs_cluster_arn == null || can(regex("^arn:aws[a-z-]*:ecs:[a-z0-9-]+:[0-9]{12}:cluster/.+$", var.ecs_cluster_arn))
    error_message = "ecs_cluster_arn must be an ECS cluster ARN or null."
  }
}

variable "wait_for_steady_state" {
  type        = bool
  description = "Make apply wait until the publisher service is stable."
  default     = true
}

variable "log_retention_days" {
  type        = number
  description = "Retention of the publisher log group (the audit trail lives in Redis, not in logs)."
  default     = 90

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a value CloudWatch Logs accepts."
  }
}

variable "log_kms_key_arn" {
  type        = string
  description = "KMS key for the log group. Null = CloudWatch default encryption."
  default     = null

  validation {
    condition     = var.log_kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:", var.log_kms_key_arn))
    error_message = "log_kms_key_arn must be a KMS key ARN or null."
  }
}

variable "enable_deletion_protection" {
  type        = bool
  description = "Protect the admin load balancer from deletion."
  default     = true
}

# ---------------------------------------------------------------------------------------------
# Redis (system of record: versions, state, outbox, audit)
# ---------------------------------------------------------------------------------------------

variable "redis_engine" {
  type        = string
  description = "ElastiCache engine: redis (Redis OSS) or valkey (protocol compatible, cheaper)."
  default     = "redis"

  validation {
    condition     = contains(["redis", "valkey"], var.redis_engine)
    error_message = "redis_engine must be redis or valkey."
  }
}

variable "redis_engine_version" {
  type        = string
  description = "Engine version (e.g. 7.1 for redis, 8.0 for valkey)."
  default     = "7.1"

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+$", var.redis_engine_version))
    error_message = "redis_engine_version must look like MAJOR.MINOR."
  }
}

variable "redis_parameter_group_family" {
  type        = string
  description = "Parameter group family matching engine and version (redis7, valkey7, valkey8)."
  default     = "redis7"

  validation {
    condition     = can(regex("^(redis|valkey)[0-9]+(\\.x)?$", var.redis_parameter_group_family))
    error_message = "redis_parameter_group_family must look like redis7 or valkey8."
  }
}

variable "redis_node_type" {
  type        = string
  description = "Node type. Memory-optimised (r) nodes are recommended: the data set must always fit (noeviction)."
  default     = "cache.r7g.large"

  validation {
    condition     = startswith(var.redis_node_type, "cache.")
    error_message = "redis_node_type must be an ElastiCache node type (cache.*)."
  }
}

variable "redis_replicas" {
  type        = number
  description = "Read replicas besides the primary, in other zones. At least one: Multi-AZ automatic failover needs it."
  default     = 1

  validation {
    condition     = var.redis_replicas >= 1 && var.redis_replicas <= 5
    error_message = "redis_replicas must be between 1 and 5."
  }
}

variable "redis_snapshot_retention_days" {
  type        = number
  description = "Days of daily snapshots kept (point-in-time recovery granularity is one day)."
  default     = 14

  validation {
    condition     = var.redis_snapshot_retention_days >= 1 && var.redis_snapshot_retention_days <= 35
    error_message = "redis_snapshot_retention_days must be between 1 and 35."
  }
}

variable "redis_snapshot_window" {
  type        = string
  description = "Daily UTC window (hh24:mi-hh24:mi, at least 60 minutes) for snapshots."
  default     = "03:00-04:00"

  validation {
    condition     = can(regex("^[0-2][0-9]:[0-5][0-9]-[0-2][0-9]:[0-5][0-9]$", var.redis_snapshot_window))
    error_message = "redis_snapshot_window must look like 03:00-04:00."
  }
}

variable "redis_maintenance_window" {
  type        = string
  description = "Weekly UTC maintenance window (ddd:hh24:mi-ddd:hh24:mi), not overlapping the snapshot window."
  default     = "sun:05:00-sun:06:00"

  validation {
    condition     = can(regex("^(mon|tue|wed|thu|fri|sat|sun):[0-2][0-9]:[0-5][0-9]-(mon|tue|wed|thu|fri|sat|sun):[0-2][0-9]:[0-5][0-9]$", var.redis_maintenance_window))
    error_message = "redis_maintenance_window must look like sun:05:00-sun:06:00."
  }
}

variable "redis_kms_key_arn" {
  type        = string
  description = "Customer-managed KMS key for Redis encryption at rest (and snapshots). Null = AWS owned key."
  default     = null

  validation {
    condition     = var.redis_kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:", var.redis_kms_key_arn))
    error_message = "redis_kms_key_arn must be a KMS key ARN or null."
  }
}

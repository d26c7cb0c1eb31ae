# ---------------------------------------------------------------------------------------------
# Identity
# ---------------------------------------------------------------------------------------------

variable "name" {
  type        = string
  description = "Short name of this regional relay fleet; prefixes every resource (e.g. 'flagstream-euw1'). Load balancer and target group names are limited to 32 characters, hence the 24-character limit."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,22}[a-z0-9]$", var.name))
    error_message = "name must be 2-24 chars of lowercase letters, digits and '-', starting with a letter."
  }
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource that supports them (on top of the provider's default_tags)."
  default     = {}
}

# ---------------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------------

variable "vpc_id" {
  type        = string
  description = "VPC the relay tasks and the load balancer live in."

  validation {
    condition     = can(regex("^vpc-[0-9a-f]{8,17}$", var.vpc_id))
    error_message = "vpc_id must be a VPC id (vpc-...)."
  }
}

variable "task_subnet_ids" {
  type        = list(string)
  description = "Private subnets (at least two availability zones) the relay tasks run in. They need a route to Kafka and to ECR/CloudWatch (NAT gateway or VPC endpoints)."

  validation {
    condition     = length(var.task_subnet_ids) >= 2 && alltrue([for s in var.task_subnet_ids : can(regex("^subnet-[0-9a-f]{8,17}$", s))])
    error_message = "task_subnet_ids needs at least two subnet ids (subnet-...), in different availability zones."
  }
}

variable "lb_subnet_ids" {
  type        = list(string)
  description = "Subnets of the network load balancer, one per availability zone: public subnets for an internet-facing relay, private ones when internal_lb is true."

  validation {
    condition     = length(var.lb_subnet_ids) >= 2 && alltrue([for s in var.lb_subnet_ids : can(regex("^subnet-[0-9a-f]{8,17}$", s))])
    error_message = "lb_subnet_ids needs at least two subnet ids (subnet-...), in different availability zones."
  }
}

variable "internal_lb" {
  type        = bool
  description = "Make the load balancer internal (reachable only from the VPC and peered networks) instead of internet-facing."
  default     = false
}

variable "allowed_client_cidrs" {
  type        = list(string)
  description = "IPv4 CIDR blocks allowed to open SDK streams on the listener. Server-side SDKs of your own services: restrict to their egress ranges when you know them."
  default     = ["0.0.0.0/0"]

  validation {
    condition     = length(var.allowed_client_cidrs) >= 1 && alltrue([for c in var.allowed_client_cidrs : can(cidrhost(c, 0))])
    error_message = "allowed_client_cidrs must be a non-empty list of valid IPv4 CIDR blocks."
  }
}

variable "https_egress_cidrs" {
  type        = list(string)
  description = "Where tasks may open HTTPS (443) connections: ECR image pulls, CloudWatch Logs/metrics, Secrets Manager. Narrow it to your VPC endpoints' CIDRs when you use interface endpoints instead of a NAT gateway."
  default     = ["0.0.0.0/0"]

  validation {
    condition     = alltrue([for c in var.https_egress_cidrs : can(cidrhost(c, 0))])
    error_message = "https_egress_cidrs must contain valid IPv4 CIDR blocks."
  }
}

variable "https_egress_prefix_list_ids" {
  type        = list(string)
  description = "Managed prefix lists tasks may reach on 443, e.g. the S3 gateway endpoint's (ECR image layers are served from S3) when https_egress_cidrs is narrowed to interface endpoints."
  default     = []

  validation {
    condition     = alltrue([for p in var.https_egress_prefix_list_ids : can(regex("^pl-[0-9a-f]{8,17}$", p))])
    error_message = "https_egress_prefix_list_ids must contain prefix list ids (pl-...)."
  }
}

variable "cross_zone_load_balancing" {
  type        = bool
  description = "Spread connections over tasks in every zone (recommended: with a few long-lived streams per task, per-zone balancing skews load). Costs inter-AZ data transfer."
  default     = true
}

# ---------------------------------------------------------------------------------------------
# Listener (what SDKs connect to)
# ---------------------------------------------------------------------------------------------

variable "listener_port" {
  type        = number
  description = "Port SDKs connect to on the load balancer."
  default     = 443

  validation {
    condition     = var.listener_port >= 1 && var.listener_port <= 65535
    error_message = "listener_port must be a TCP port (1-65535)."
  }
}

variable "certificate_arn" {
  type        = string
  description = "ACM certificate for a TLS listener (TLS terminated at the NLB; SDK keys travel in headers, so use TLS on anything public). Null gives a plain TCP listener, allowed only for internal load balancers unless allow_plaintext_public_listener is set."
  default     = null

  validation {
    condition     = var.certificate_arn == null || can(regex("^arn:aws[a-z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/.+$", var.certificate_arn))
    error_message = "certificate_arn must be an ACM certificate ARN or null."
  }
}

variable "allow_plaintext_public_listener" {
  type        = bool
  description = "Explicit opt-in for an internet-facing listener without TLS (e.g. when a TLS-terminating proxy sits in front). Off by default."
  default     = false
}

variable "ssl_policy" {
  type        = string
  description = "TLS security policy of the TLS listener."
  default     = "ELBSecurityPolicy-TLS13-1-2-2021-06"

  validation {
    condition     = can(regex("^ELBSecurityPolicy-(TLS13-|TLS-1-2-|FS-1-2-)", var.ssl_policy))
    error_message = "ssl_policy must be a TLS 1.2+ policy: ELBSecurityPolicy-TLS13-*, -TLS-1-2-* or -FS-1-2-*."
  }
}

variable "tcp_idle_timeout_seconds" {
  type        = number
  description = "NLB idle timeout for TCP listeners (60-6000 s; AWS default 350). Must exceed the relay heartbeat interval with margin, or idle streams are cut. TLS listeners have a fixed 350 s."
  default     = 350

  validation {
    condition     = var.tcp_idle_timeout_seconds >= 60 && var.tcp_idle_timeout_seconds <= 6000
    error_message = "tcp_idle_timeout_seconds must be between 60 and 6000."
  }
}

# ---------------------------------------------------------------------------------------------
# Relay container
# ---------------------------------------------------------------------------------------------

variable "container_image" {
  type        = string
  description = "Container image that runs the flagstream relay, pinned to a tag or digest (e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com/flagstream:1.4.2)."

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9._/:-]*[:@][A-Za-z0-9._:-]+$", var.container_image)) && !endswith(var.container_image, ":latest")
    error_message = "container_image must be pinned to an explicit tag or digest (not :latest)."
  }
}

variable "container_command" {
  type        = list(string)
  description = "Arguments to the image's entrypoint (`flagstream`, see the repository's Dockerfile) that start the relay."
  default     = ["relay"]

  validation {
    condition     = length(var.container_command) >= 1
    error_message = "container_command must not be empty."
  }
}

variable "relay_port" {
  type        = number
  description = "Port the relay listens on inside the task (FLAGSTREAM_RELAY_PORT)."
  default     = 8030

  validation {
    condition     = var.relay_port >= 1024 && var.relay_port <= 65535
    error_message = "relay_port must be an unprivileged TCP port (1024-65535)."
  }
}

variable "kafka_bootstrap" {
  type        = string
  description = "Kafka bootstrap servers this region's relays read from (FLAGSTREAM_KAFKA_BOOTSTRAP): host:port[,host:port...]. A regional replica cluster or the central cluster; see the README trade-off."

  validation {
    condition     = alltrue([for h in split(",", var.kafka_bootstrap) : can(regex("^[A-Za-z0-9.-]+:[0-9]{1,5}$", trimspace(h)))])
    error_message = "kafka_bootstrap must be host:port[,host:port...]."
  }
}

variable "kafka_port_range" {
  type = object({
    from = number
    to   = number
  })
  description = "TCP port range of the Kafka brokers (for the tasks' egress rule): 9092 plaintext, 9094 TLS, 9096 SASL/SCRAM, 9098 IAM on MSK."
  default     = { from = 9092, to = 9098 }

  validation {
    condition     = var.kafka_port_range.from >= 1 && var.kafka_port_range.to <= 65535 && var.kafka_port_range.from <= var.kafka_port_range.to
    error_message = "kafka_port_range must satisfy 1 <= from <= to <= 65535."
  }
}

variable "kafka_cidrs" {
  type        = list(string)
  description = "CIDR blocks of the Kafka brokers the tasks may reach. Give this or kafka_security_group_ids (or both)."
  default     = []

  validation {
    condition     = alltrue([for c in var.kafka_cidrs : can(cidrhost(c, 0))])
    error_message = "kafka_cidrs must contain valid IPv4 CIDR blocks."
  }
}

variable "kafka_security_group_ids" {
  type        = list(string)
  description = "Security groups of the Kafka brokers (same VPC or peered) the tasks may reach. Remember to allow the tasks' security group (output task_security_group_id) on the broker side."
  default     = []

  validation {
    condition     = alltrue([for s in var.kafka_security_group_ids : can(regex("^sg-[0-9a-f]{8,17}$", s))])
    error_message = "kafka_security_group_ids must contain security group ids (sg-...)."
  }
}

variable "topic" {
  type        = string
  description = "Compacted state topic the relays read (FLAGSTREAM_TOPIC)."
  default     = "flagstream.state"

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]{1,249}$", var.topic))
    error_message = "topic must be 1-249 chars of [A-Za-z0-9._-]."
  }
}

variable "relay_workers" {
  type        = number
  description = "Relay worker processes per task (FLAGSTREAM_RELAY_WORKERS). Null = one per vCPU of the task (Fargate reports the host's CPU count to the process, so the relay's own default would oversubscribe)."
  default     = null

  validation {
    condition     = var.relay_workers == null || (var.relay_workers >= 1 && var.relay_workers <= 64)
    error_message = "relay_workers must be null or between 1 and 64."
  }
}

variable "heartbeat_interval_seconds" {
  type        = number
  description = "Seconds between SSE heartbeat comments (FLAGSTREAM_RELAY_HEARTBEAT_INTERVAL); keeps idle streams alive through the load balancer."
  default     = 15

  validation {
    condition     = var.heartbeat_interval_seconds > 0 && var.heartbeat_interval_seconds <= 120
    error_message = "heartbeat_interval_seconds must be in (0, 120]."
  }
}

variable "drain_window_seconds" {
  type        = number
  description = "Seconds over which a relay spreads the closing of its streams after SIGTERM (FLAGSTREAM_RELAY_DRAIN_WINDOW). The target group deregistration delay and the container stop timeout are derived from it."
  default     = 10

  validation {
    condition     = var.drain_window_seconds >= 0 && var.drain_window_seconds <= 100
    error_message = "drain_window_seconds must be between 0 and 100 (Fargate kills a container at most 120 s after SIGTERM)."
  }
}

variable "drain_margin_seconds" {
  type        = number
  description = "Extra seconds on top of the drain window for the deregistration delay and the container stop timeout (process exit, last writes, clock skew)."
  default     = 15

  validation {
    condition     = var.drain_margin_seconds >= 5 && var.drain_margin_seconds <= 300
    error_message = "drain_margin_seconds must be between 5 and 300."
  }
}

variable "max_connections_per_task" {
  type        = number
  description = "Streams one task accepts before answering 503 with Retry-After; split evenly over the workers (FLAGSTREAM_RELAY_MAX_CONNECTIONS is per worker). Size it to the task's memory; keep the autoscaling target well below it."
  default     = 20000

  validation {
    condition     = var.max_connections_per_task >= 1 && var.max_connections_per_task <= 1000000
    error_message = "max_connections_per_task must be between 1 and 1000000."
  }
}

variable "max_connection_lifetime_seconds" {
  type        = number
  description = "Close each stream after this many seconds (with jitter) so SDKs reconnect and load rebalances onto tasks added by scale-out (FLAGSTREAM_RELAY_MAX_CONNECTION_LIFETIME). Null = streams live forever."
  default     = 3600

  validation {
    condition     = var.max_connection_lifetime_seconds == null || try(var.max_connection_lifetime_seconds >= 60, false)
    error_message = "max_connection_lifetime_seconds must be null or at least 60."
  }
}

variable "extra_environment" {
  type        = map(string)
  description = "Additional FLAGSTREAM_* environment variables for the relay (non-secret), e.g. FLAGSTREAM_RELAY_MAX_BUFFER_BYTES. They cannot override the ones this module sets."
  default     = {}

  validation {
    condition     = alltrue([for k in keys(var.extra_environment) : can(regex("^FLAGSTREAM_[A-Z0-9_]+$", k))])
    error_message = "extra_environment keys must be FLAGSTREAM_* variable names."
  }
}

variable "secrets" {
  type        = map(string)
  description = "Environment variables filled from Secrets Manager or SSM Parameter Store at task start (name => secret/parameter ARN), e.g. Kafka SASL credentials. Only these ARNs are readable by the execution role."
  default     = {}

  validation {
    condition     = alltrue([for k, v in var.secrets : can(regex("^[A-Z][A-Z0-9_]*$", k)) && can(regex("^arn:aws[a-z-]*:(secretsmanager|ssm):", v))])
    error_message = "secrets must map UPPER_CASE names to Secrets Manager or SSM parameter ARNs."
  }
}

variable "secrets_kms_key_arns" {
  type        = list(string)
  description = "Customer-managed KMS keys that encrypt the secrets above (the execution role gets kms:Decrypt on exactly these)."
  default     = []

  validation {
    condition     = alltrue([for k in var.secrets_kms_key_arns : can(regex("^arn:aws[a-z-]*:kms:", k))])
    error_message = "secrets_kms_key_arns must contain KMS key ARNs."
  }
}

# ---------------------------------------------------------------------------------------------
# Task size and capacity
# ---------------------------------------------------------------------------------------------

variable "cpu" {
  type        = number
  description = "Fargate task CPU units (1024 = 1 vCPU)."
  default     = 1024

  validation {
    condition     = contains([256, 512, 1024, 2048, 4096, 8192, 16384], var.cpu)
    error_message = "cpu must be a Fargate size: 256, 512, 1024, 2048, 4096, 8192 or 16384."
  }
}

variable "memory" {
  type        = number
  description = "Fargate task memory in MiB; must be a valid combination with cpu (checked at plan time)."
  default     = 2048

  validation {
    condition     = var.memory >= 512 && var.memory <= 122880 && var.memory % 512 == 0
    error_message = "memory must be a multiple of 512 MiB between 512 and 122880."
  }
}

variable "cpu_architecture" {
  type        = string
  description = "CPU architecture of the task: X86_64, or ARM64 (Graviton, cheaper) if the image is multi-arch."
  default     = "X86_64"

  validation {
    condition     = contains(["X86_64", "ARM64"], var.cpu_architecture)
    error_message = "cpu_architecture must be X86_64 or ARM64."
  }
}

variable "nofile_limit" {
  type        = number
  description = "Open-file limit (soft and hard) of the relay container; every stream is a socket. Must exceed max_connections_per_task."
  default     = 1048576

  validation {
    condition     = var.nofile_limit >= 1024 && var.nofile_limit <= 1048576
    error_message = "nofile_limit must be between 1024 and 1048576 (the Fargate maximum)."
  }
}

variable "min_capacity" {
  type        = number
  description = "Minimum number of relay tasks (autoscaling floor; also the initial desired count). Two or more keeps a zone failure or a deploy from dropping every stream."
  default     = 2

  validation {
    condition     = var.min_capacity >= 1 && var.min_capacity <= 1000
    error_message = "min_capacity must be between 1 and 1000."
  }
}

variable "max_capacity" {
  type        = number
  description = "Maximum number of relay tasks (autoscaling ceiling)."
  default     = 10

  validation {
    condition     = var.max_capacity >= 1 && var.max_capacity <= 1000
    error_message = "max_capacity must be between 1 and 1000."
  }
}

variable "target_connections_per_task" {
  type        = number
  description = "Target-tracking goal for the average number of open streams per task (gauge flagstream_relay_connections). Null disables connection-based scaling. Needs the metrics sidecar."
  default     = 8000

  validation {
    condition     = var.target_connections_per_task == null || try(var.target_connections_per_task >= 1, false)
    error_message = "target_connections_per_task must be null or at least 1."
  }
}

variable "target_cpu_percent" {
  type        = number
  description = "Target-tracking goal for the service's average CPU utilisation (a guard for bursts of fan-out work). Null disables CPU-based scaling."
  default     = 60

  validation {
    condition     = var.target_cpu_percent == null || try(var.target_cpu_percent >= 10 && var.target_cpu_percent <= 90, false)
    error_message = "target_cpu_percent must be null or between 10 and 90."
  }
}

variable "scale_out_cooldown_seconds" {
  type        = number
  description = "Seconds after a scale-out before another scale-out activity may start."
  default     = 60

  validation {
    condition     = var.scale_out_cooldown_seconds >= 0 && var.scale_out_cooldown_seconds <= 3600
    error_message = "scale_out_cooldown_seconds must be between 0 and 3600."
  }
}

variable "scale_in_cooldown_seconds" {
  type        = number
  description = "Seconds after a scale-in before another scale-in may start. Long on purpose: every scale-in moves streams (SDK reconnects)."
  default     = 600

  validation {
    condition     = var.scale_in_cooldown_seconds >= 60 && var.scale_in_cooldown_seconds <= 3600
    error_message = "scale_in_cooldown_seconds must be between 60 and 3600."
  }
}

variable "health_check_grace_period_seconds" {
  type        = number
  description = "Seconds ECS ignores failed load balancer health checks of a new task: the relay answers /readyz 200 only after its bootstrap read of the whole topic."
  default     = 180

  validation {
    condition     = var.health_check_grace_period_seconds >= 0 && var.health_check_grace_period_seconds <= 2147483647
    error_message = "health_check_grace_period_seconds must be >= 0."
  }
}

variable "ecs_cluster_arn" {
  type        = string
  description = "Existing ECS cluster to run the service in. Null creates a cluster named after var.name (with Container Insights)."
  default     = null

  validation {
    condition     = var.ecs_cluster_arn == null || can(regex("^arn:aws[a-z-]*:ecs:[a-z0-9-]+:[0-9]{12}:cluster/.+$", var.ecs_cluster_arn))
    error_message = "ecs_cluster_arn must be an ECS cluster ARN or null."
  }
}

variable "wait_for_steady_state" {
  type        = bool
  description = "Make apply wait until the service is stable (all tasks healthy behind the NLB)."
  default     = true
}

# ---------------------------------------------------------------------------------------------
# Logs, metrics, alarms
# ---------------------------------------------------------------------------------------------

variable "log_retention_days" {
  type        = number
  description = "Retention of the relay's CloudWatch log groups."
  default     = 30

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a value CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, ... 3653)."
  }
}

variable "log_kms_key_arn" {
  type        = string
  description = "KMS key that encrypts the log groups (its key policy must allow the CloudWatch Logs service of this region). Null uses CloudWatch's default encryption."
  default     = null

  validation {
    condition     = var.log_kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:", var.log_kms_key_arn))
    error_message = "log_kms_key_arn must be a KMS key ARN or null."
  }
}

variable "enable_metrics_sidecar" {
  type        = bool
  description = "Run an AWS Distro for OpenTelemetry sidecar that scrapes the relay's /metrics and publishes the key series to CloudWatch (required for connection-based autoscaling)."
  default     = true
}

variable "metrics_sidecar_image" {
  type        = string
  description = "ADOT collector image for the metrics sidecar, pinned."
  default     = "public.ecr.aws/aws-observability/aws-otel-collector:v0.43.3"

  validation {
    condition     = can(regex("[:@]", var.metrics_sidecar_image)) && !endswith(var.metrics_sidecar_image, ":latest")
    error_message = "metrics_sidecar_image must be pinned to an explicit tag or digest."
  }
}

variable "metrics_namespace" {
  type        = string
  description = "CloudWatch namespace of the relay metrics."
  default     = "Flagstream/Relay"

  validation {
    condition     = can(regex("^[A-Za-z0-9/_.#:-]{1,255}$", var.metrics_namespace)) && !startswith(var.metrics_namespace, "AWS/")
    error_message = "metrics_namespace must be 1-255 chars of [A-Za-z0-9/_.#:-] and not start with AWS/."
  }
}

variable "amp_workspace_arn" {
  type        = string
  description = "Optional Amazon Managed Service for Prometheus workspace that receives every relay series by remote write (for Grafana dashboards). Null = CloudWatch only."
  default     = null

  validation {
    condition     = var.amp_workspace_arn == null || can(regex("^arn:aws[a-z-]*:aps:[a-z0-9-]+:[0-9]{12}:workspace/ws-[a-z0-9-]+$", var.amp_workspace_arn))
    error_message = "amp_workspace_arn must be an AMP workspace ARN or null."
  }
}

variable "alarm_topic_arn" {
  type        = string
  description = "SNS topic notified by the fleet's alarms (too few healthy tasks, tasks near max connections). Null creates no alarms."
  default     = null

  validation {
    condition     = var.alarm_topic_arn == null || can(regex("^arn:aws[a-z-]*:sns:", var.alarm_topic_arn))
    error_message = "alarm_topic_arn must be an SNS topic ARN or null."
  }
}

variable "enable_deletion_protection" {
  type        = bool
  description = "Protect the load balancer from deletion (its DNS name is what SDKs and DNS records point at)."
  default     = true
}

variable "access_logs_bucket" {
  type        = string
  description = "S3 bucket for NLB access logs (NLBs log TLS listeners only). Null disables access logs."
  default     = null

  validation {
    condition     = var.access_logs_bucket == null || can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.access_logs_bucket))
    error_message = "access_logs_bucket must be an S3 bucket name or null."
  }
}

variable "region" {
  type        = string
  description = "AWS region the collector exports to (the region of the task it runs in)."

  validation {
    condition     = can(regex("^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]$", var.region))
    error_message = "region must look like an AWS region name, e.g. eu-west-1."
  }
}

variable "container_name" {
  type        = string
  description = "Name of the sidecar container inside the task definition."
  default     = "metrics"

  validation {
    condition     = can(regex("^[a-zA-Z0-9_-]{1,255}$", var.container_name))
    error_message = "container_name may contain letters, digits, '-' and '_' (1-255 chars)."
  }
}

variable "image" {
  type        = string
  description = "AWS Distro for OpenTelemetry collector image, pinned to a tag or digest."
  default     = "public.ecr.aws/aws-observability/aws-otel-collector:v0.43.3"

  validation {
    condition     = can(regex("[:@]", var.image)) && !endswith(var.image, ":latest")
    error_message = "image must be pinned to an explicit tag or digest (not :latest)."
  }
}

variable "cpu" {
  type        = number
  description = "CPU units reserved for the collector inside the task (1024 = 1 vCPU)."
  default     = 128

  validation {
    condition     = var.cpu >= 0 && var.cpu <= 1024
    error_message = "cpu must be between 0 and 1024 units."
  }
}

variable "memory_reservation" {
  type        = number
  description = "Soft memory reservation of the collector in MiB."
  default     = 128

  validation {
    condition     = var.memory_reservation >= 64 && var.memory_reservation <= 2048
    error_message = "memory_reservation must be between 64 and 2048 MiB."
  }
}

variable "scrape_port" {
  type        = number
  description = "Port of the application's Prometheus endpoint on the task's loopback interface."

  validation {
    condition     = var.scrape_port >= 1 && var.scrape_port <= 65535
    error_message = "scrape_port must be a TCP port (1-65535)."
  }
}

variable "metrics_path" {
  type        = string
  description = "HTTP path of the application's Prometheus endpoint."
  default     = "/metrics"

  validation {
    condition     = startswith(var.metrics_path, "/")
    error_message = "metrics_path must start with '/'."
  }
}

variable "scrape_interval_seconds" {
  type        = number
  description = "How often the collector scrapes the application."
  default     = 15

  validation {
    condition     = var.scrape_interval_seconds >= 5 && var.scrape_interval_seconds <= 300
    error_message = "scrape_interval_seconds must be between 5 and 300."
  }
}

variable "job_name" {
  type        = string
  description = "Prometheus job name given to the scrape (becomes the 'job' label)."

  validation {
    condition     = can(regex("^[a-zA-Z0-9_-]{1,64}$", var.job_name))
    error_message = "job_name may contain letters, digits, '-' and '_' (1-64 chars)."
  }
}

variable "dimensions" {
  type        = map(string)
  description = "Static labels added to every scraped series; they become the CloudWatch dimensions of the exported metrics (e.g. ClusterName, ServiceName)."

  validation {
    condition     = length(var.dimensions) >= 1 && length(var.dimensions) <= 10
    error_message = "dimensions must hold 1 to 10 labels (CloudWatch allows 30 dimensions, keep it small)."
  }
}

variable "cloudwatch_namespace" {
  type        = string
  description = "CloudWatch namespace of the metrics exported through Embedded Metric Format."

  validation {
    condition     = can(regex("^[A-Za-z0-9/_.#:-]{1,255}$", var.cloudwatch_namespace)) && !startswith(var.cloudwatch_namespace, "AWS/")
    error_message = "cloudwatch_namespace must be 1-255 chars of [A-Za-z0-9/_.#:-] and not start with AWS/."
  }
}

variable "emf_log_group_name" {
  type        = string
  description = "Existing CloudWatch Logs group the collector writes its Embedded Metric Format records to."

  validation {
    condition     = can(regex("^[\\.\\-_/#A-Za-z0-9]{1,512}$", var.emf_log_group_name))
    error_message = "emf_log_group_name must be a valid CloudWatch Logs group name."
  }
}

variable "cloudwatch_metric_selectors" {
  type        = list(string)
  description = "Regular expressions of the Prometheus metric names published as CloudWatch metrics (others stay in the EMF log only). Keep this short: every metric costs money."

  validation {
    condition     = length(var.cloudwatch_metric_selectors) >= 1 && alltrue([for s in var.cloudwatch_metric_selectors : can(regexall(s, ""))])
    error_message = "cloudwatch_metric_selectors needs at least one valid regular expression."
  }
}

variable "amp_remote_write_url" {
  type        = string
  description = "Optional Amazon Managed Service for Prometheus remote-write URL; when set, every scraped series is also sent there (SigV4-signed with the task role)."
  default     = null

  validation {
    condition     = var.amp_remote_write_url == null || can(regex("^https://aps-workspaces\\.[a-z0-9-]+\\.amazonaws\\.com/workspaces/ws-[a-z0-9-]+/api/v1/remote_write$", var.amp_remote_write_url))
    error_message = "amp_remote_write_url must be an AMP workspace remote_write URL or null."
  }
}

variable "log_configuration" {
  type = object({
    log_group_name = string
    stream_prefix  = string
  })
  description = "awslogs settings for the collector's own logs (normally the task's log group)."
}

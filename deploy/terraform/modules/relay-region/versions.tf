terraform {
  # OpenTofu >= 1.6 or Terraform >= 1.6: optional() object attributes, startswith/endswith,
  # lifecycle preconditions. Nothing newer is required, so the same code works on both.
  required_version = ">= 1.6.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 5.91 added aws_lb_listener.tcp_idle_timeout_seconds; 5.100 added data.aws_region.region
      # (the v6 replacement of the deprecated .name), so one code base runs on v5 and v6.
      version = ">= 5.100.0, < 7.0.0"
    }
  }
}

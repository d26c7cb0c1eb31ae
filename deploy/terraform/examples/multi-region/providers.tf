# Terraform cannot for_each over provider blocks (and a module's provider must be known
# statically), so the standard pattern is: one aliased provider per AWS region the
# organisation deploys to, and one module block per alias whose for_each picks that region's
# entry (if any) out of var.regions. The map stays the single source of truth: adding or
# removing a region's fleet, or resizing it, is a tfvars change; only a brand-new AWS region
# needs the three lines below plus a module block in main.tf (see README "Adding a region").
#
# OpenTofu >= 1.9 can iterate providers (provider "aws" { for_each = ... }); see README for
# that variant. This file keeps the portable form that works on Terraform and OpenTofu.

locals {
  default_tags = {
    "app"        = "flagstream"
    "managed-by" = "terraform"
  }
}

provider "aws" {
  alias  = "us_east_1"
  region = "us-east-1"
  default_tags {
    tags = local.default_tags
  }
}

provider "aws" {
  alias  = "eu_west_1"
  region = "eu-west-1"
  default_tags {
    tags = local.default_tags
  }
}

provider "aws" {
  alias  = "ap_southeast_1"
  region = "ap-southeast-1"
  default_tags {
    tags = local.default_tags
  }
}

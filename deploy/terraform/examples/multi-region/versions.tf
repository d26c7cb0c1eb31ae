terraform {
  required_version = ">= 1.6.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.100.0, < 7.0.0"
    }
    random = {
      source  = "hashicorp/random"
      version = ">= 3.5.0, < 4.0.0"
    }
  }

  # Keep the state in an encrypted, locked backend: it holds the Redis AUTH token.
  # backend "s3" {
  #   bucket       = "my-org-terraform-state"
  #   key          = "flagstream/multi-region.tfstate"
  #   region       = "us-east-1"
  #   encrypt      = true
  #   use_lockfile = true
  # }
}

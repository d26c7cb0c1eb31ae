# Redis is the publisher's system of record (versions, state, outbox, audit; DESIGN.md §1).
#
# Persistence on ElastiCache (see README "Redis durability"):
#   - Multi-AZ with automatic failover and >= 1 replica: a node or zone loss promotes a
#     replica within about a minute.
#   - Daily snapshots kept var.redis_snapshot_retention_days, plus a final snapshot on delete.
#   - AOF is not offered by ElastiCache for current engines; replication is asynchronous, so
#     a failover can lose the last writes acknowledged by the old primary. Kafka still has
#     every record that was answered 200 (the relays and a rebuild can use it); for strict
#     zero-loss use MemoryDB (durable multi-AZ transaction log) behind the same Redis URL.
#   - maxmemory-policy noeviction: a system of record must refuse writes, never evict keys.

resource "aws_elasticache_subnet_group" "redis" {
  name        = "${var.name}-publisher"
  description = "flagstream publisher Redis ${var.name}"
  subnet_ids  = local.redis_subnet_ids
  tags        = local.tags
}

resource "aws_elasticache_parameter_group" "redis" {
  name        = "${var.name}-publisher-${var.redis_parameter_group_family}"
  family      = var.redis_parameter_group_family
  description = "flagstream publisher: system of record, never evict"

  parameter {
    name  = "maxmemory-policy"
    value = "noeviction"
  }

  # Leave room for the fork of background snapshots (copy-on-write) and replication buffers.
  parameter {
    name  = "reserved-memory-percent"
    value = "25"
  }

  tags = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_cloudwatch_log_group" "redis_slow" {
  #checkov:skip=CKV_AWS_158:KMS encryption is opt-in through var.log_kms_key_arn; slow-log entries hold command names and timings.
  #checkov:skip=CKV_AWS_338:Slow-log is a diagnostics stream; retention follows var.log_retention_days.
  name              = "/flagstream/${var.name}/redis-slow-log"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.log_kms_key_arn
  tags              = local.tags
}

resource "aws_elasticache_replication_group" "redis" {
  replication_group_id = "${var.name}-publisher"
  description          = "flagstream publisher system of record (${var.name})"
  engine               = var.redis_engine
  engine_version       = var.redis_engine_version
  node_type            = var.redis_node_type
  port                 = 6379
  parameter_group_name = aws_elasticache_parameter_group.redis.name
  subnet_group_name    = aws_elasticache_subnet_group.redis.name
  security_group_ids   = [aws_security_group.redis.id]

  # Primary + replicas in different zones, automatic failover.
  num_cache_clusters         = 1 + var.redis_replicas
  automatic_failover_enabled = true
  multi_az_enabled           = true

  # Encryption in transit with AUTH, at rest (optionally with a customer key).
  transit_encryption_enabled = true
  auth_token                 = random_password.redis_auth.result
  auth_token_update_strategy = "ROTATE"
  at_rest_encryption_enabled = true
  kms_key_id                 = var.redis_kms_key_arn

  # Persistence: daily snapshots, final snapshot on delete.
  snapshot_retention_limit  = var.redis_snapshot_retention_days
  snapshot_window           = var.redis_snapshot_window
  final_snapshot_identifier = "${var.name}-publisher-final"

  maintenance_window         = var.redis_maintenance_window
  auto_minor_version_upgrade = true
  apply_immediately          = false

  log_delivery_configuration {
    destination      = aws_cloudwatch_log_group.redis_slow.name
    destination_type = "cloudwatch-logs"
    log_format       = "json"
    log_type         = "slow-log"
  }

  tags = local.tags
}

# --- credentials -----------------------------------------------------------------------------
# ElastiCache takes the AUTH token as a plain argument, so it is in the Terraform state
# whatever we do: keep the state in an encrypted, access-controlled backend (S3 + KMS). The
# publisher reads the full URL from Secrets Manager at task start; it never appears in the
# task definition. Rotate by tainting random_password.redis_auth (ROTATE strategy keeps the
# old token valid until the tasks are redeployed with the new secret).

resource "random_password" "redis_auth" {
  length           = 48
  special          = true
  override_special = "!&#$^<>-" # the characters ElastiCache accepts in AUTH tokens
  min_upper        = 2
  min_lower        = 2
  min_numeric      = 2
}

resource "aws_secretsmanager_secret" "redis_url" {
  #checkov:skip=CKV2_AWS_57:The Redis AUTH token is rotated through Terraform (see comment above), not a rotation Lambda: ElastiCache needs the token changed on the replication group first.
  name_prefix             = "${var.name}/publisher/redis-url-"
  description             = "FLAGSTREAM_REDIS_URL of the flagstream publisher ${var.name} (rediss:// with AUTH)"
  kms_key_id              = var.secrets_kms_key_arn
  recovery_window_in_days = 7
  tags                    = local.tags
}

resource "aws_secretsmanager_secret_version" "redis_url" {
  secret_id = aws_secretsmanager_secret.redis_url.id
  secret_string = format(
    "rediss://:%s@%s:%d/0",
    urlencode(random_password.redis_auth.result),
    aws_elasticache_replication_group.redis.primary_endpoint_address,
    aws_elasticache_replication_group.redis.port,
  )
}

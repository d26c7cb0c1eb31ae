# admins --(listener_port)--> internal NLB --(publisher_port)--> tasks --(6379)--> Redis
#                                                                   \--(Kafka ports)--> brokers
#                                                                   \--(443)--> ECR, Logs, Secrets Manager

resource "aws_security_group" "lb" {
  name        = "${var.name}-publisher-lb"
  description = "flagstream publisher admin NLB ${var.name}"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-publisher-lb" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "lb_admins" {
  for_each = toset(var.admin_cidrs)

  security_group_id = aws_security_group.lb.id
  description       = "Admin API from ${each.value}"
  ip_protocol       = "tcp"
  from_port         = var.listener_port
  to_port           = var.listener_port
  cidr_ipv4         = each.value
  tags              = local.tags
}

resource "aws_vpc_security_group_egress_rule" "lb_to_tasks" {
  security_group_id            = aws_security_group.lb.id
  description                  = "Admin API and /readyz health checks to publisher tasks"
  ip_protocol                  = "tcp"
  from_port                    = var.publisher_port
  to_port                      = var.publisher_port
  referenced_security_group_id = aws_security_group.task.id
  tags                         = local.tags
}

resource "aws_security_group" "task" {
  name        = "${var.name}-publisher-task"
  description = "flagstream publisher tasks ${var.name}"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-publisher-task" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "task_from_lb" {
  security_group_id            = aws_security_group.task.id
  description                  = "Publisher port from the admin NLB"
  ip_protocol                  = "tcp"
  from_port                    = var.publisher_port
  to_port                      = var.publisher_port
  referenced_security_group_id = aws_security_group.lb.id
  tags                         = local.tags
}

resource "aws_vpc_security_group_egress_rule" "task_to_redis" {
  security_group_id            = aws_security_group.task.id
  description                  = "Redis (TLS) system of record"
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
  referenced_security_group_id = aws_security_group.redis.id
  tags                         = local.tags
}

resource "aws_vpc_security_group_egress_rule" "task_to_kafka_cidr" {
  for_each = toset(var.kafka_cidrs)

  security_group_id = aws_security_group.task.id
  description       = "Kafka brokers in ${each.value}"
  ip_protocol       = "tcp"
  from_port         = var.kafka_port_range.from
  to_port           = var.kafka_port_range.to
  cidr_ipv4         = each.value
  tags              = local.tags
}

resource "aws_vpc_security_group_egress_rule" "task_to_kafka_sg" {
  for_each = toset(var.kafka_security_group_ids)

  security_group_id            = aws_security_group.task.id
  description                  = "Kafka brokers in ${each.value}"
  ip_protocol                  = "tcp"
  from_port                    = var.kafka_port_range.from
  to_port                      = var.kafka_port_range.to
  referenced_security_group_id = each.value
  tags                         = local.tags
}

resource "aws_vpc_security_group_egress_rule" "task_https" {
  for_each = toset(var.https_egress_cidrs)

  security_group_id = aws_security_group.task.id
  description       = "HTTPS to AWS APIs via ${each.value}"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = each.value
  tags              = local.tags
}

resource "aws_security_group" "redis" {
  name        = "${var.name}-publisher-redis"
  description = "flagstream publisher Redis ${var.name}: publisher tasks only"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-publisher-redis" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "redis_from_tasks" {
  security_group_id            = aws_security_group.redis.id
  description                  = "Redis from publisher tasks only"
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
  referenced_security_group_id = aws_security_group.task.id
  tags                         = local.tags
}

resource "aws_lb" "publisher" {
  #checkov:skip=CKV_AWS_91:NLB access logs only cover TLS listeners; the admin API keeps its own audit trail in Redis.
  #checkov:skip=CKV_AWS_150:Deletion protection is an input (default true).
  #checkov:skip=CKV2_AWS_20:HTTP to HTTPS redirects are an ALB feature; this internal NLB serves one port.
  #checkov:skip=CKV2_AWS_28:WAF does not attach to NLBs; the admin API is internal and token-authenticated.
  name                             = "${var.name}-pub"
  load_balancer_type               = "network"
  internal                         = true
  subnets                          = var.task_subnet_ids
  security_groups                  = [aws_security_group.lb.id]
  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = var.enable_deletion_protection
  tags                             = local.tags
}

resource "aws_lb_target_group" "publisher" {
  name                 = "${var.name}-pub"
  target_type          = "ip"
  protocol             = "TCP"
  port                 = var.publisher_port
  vpc_id               = var.vpc_id
  deregistration_delay = 30

  health_check {
    enabled             = true
    protocol            = "HTTP"
    port                = "traffic-port"
    path                = "/readyz"
    matcher             = "200"
    interval            = 10
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }

  tags = local.tags
}

resource "aws_lb_listener" "publisher" {
  load_balancer_arn = aws_lb.publisher.arn
  port              = var.listener_port
  protocol          = local.listener_protocol
  certificate_arn   = var.certificate_arn
  ssl_policy        = local.listener_protocol == "TLS" ? "ELBSecurityPolicy-TLS13-1-2-2021-06" : null

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.publisher.arn
  }

  tags = local.tags
}

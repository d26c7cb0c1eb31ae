# Least-privilege network paths:
#   clients --(listener_port)--> NLB SG --(relay_port)--> task SG --(Kafka ports)--> brokers
#                                                            \--(443)--> ECR, CloudWatch, Secrets Manager
# NLB health checks come from the NLB itself, so the task SG needs nothing but the NLB SG.

resource "aws_security_group" "lb" {
  name        = "${var.name}-relay-lb"
  description = "flagstream relay NLB ${var.name}: SDK streams in, relay port out"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-relay-lb" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "lb_clients" {
  for_each = toset(var.allowed_client_cidrs)

  security_group_id = aws_security_group.lb.id
  description       = "SDK streams from ${each.value}"
  ip_protocol       = "tcp"
  from_port         = var.listener_port
  to_port           = var.listener_port
  cidr_ipv4         = each.value
  tags              = local.tags
}

resource "aws_vpc_security_group_egress_rule" "lb_to_tasks" {
  security_group_id            = aws_security_group.lb.id
  description                  = "Streams and /readyz health checks to relay tasks"
  ip_protocol                  = "tcp"
  from_port                    = var.relay_port
  to_port                      = var.relay_port
  referenced_security_group_id = aws_security_group.task.id
  tags                         = local.tags
}

resource "aws_security_group" "task" {
  name        = "${var.name}-relay-task"
  description = "flagstream relay tasks ${var.name}: relay port from the NLB only"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-relay-task" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "task_from_lb" {
  security_group_id            = aws_security_group.task.id
  description                  = "Relay port from the NLB (streams and health checks)"
  ip_protocol                  = "tcp"
  from_port                    = var.relay_port
  to_port                      = var.relay_port
  referenced_security_group_id = aws_security_group.lb.id
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
  description       = "HTTPS to AWS APIs (ECR, CloudWatch, Secrets Manager) via ${each.value}"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = each.value
  tags              = local.tags
}

resource "aws_vpc_security_group_egress_rule" "task_https_prefix_list" {
  for_each = toset(var.https_egress_prefix_list_ids)

  security_group_id = aws_security_group.task.id
  description       = "HTTPS to ${each.value} (e.g. S3 gateway endpoint for ECR layers)"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  prefix_list_id    = each.value
  tags              = local.tags
}

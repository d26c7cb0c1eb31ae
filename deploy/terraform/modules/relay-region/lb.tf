resource "aws_lb" "relay" {
  #checkov:skip=CKV_AWS_91:Access logging is opt-in via var.access_logs_bucket; NLBs only log TLS listeners and the bucket policy is account-specific.
  #checkov:skip=CKV_AWS_150:Deletion protection is an input (default true); examples and test stacks turn it off.
  #checkov:skip=CKV2_AWS_20:Redirecting HTTP to HTTPS is an ALB feature; this NLB serves TLS (or TCP when internal) on one port.
  #checkov:skip=CKV2_AWS_28:WAF does not attach to Network Load Balancers; SDK streams are authenticated by the relay (401 on unknown keys).
  name                             = "${var.name}-relay"
  load_balancer_type               = "network"
  internal                         = var.internal_lb
  subnets                          = var.lb_subnet_ids
  security_groups                  = [aws_security_group.lb.id]
  enable_cross_zone_load_balancing = var.cross_zone_load_balancing
  enable_deletion_protection       = var.enable_deletion_protection

  dynamic "access_logs" {
    for_each = var.access_logs_bucket == null ? [] : [var.access_logs_bucket]
    content {
      bucket  = access_logs.value
      prefix  = "${var.name}-relay"
      enabled = true
    }
  }

  tags = local.tags

  lifecycle {
    precondition {
      condition     = var.certificate_arn != null || var.internal_lb || var.allow_plaintext_public_listener
      error_message = "An internet-facing relay needs certificate_arn (TLS): SDK keys travel in request headers. Set allow_plaintext_public_listener only if TLS is terminated in front of the NLB."
    }
  }
}

resource "aws_lb_target_group" "relay" {
  name        = "${var.name}-relay"
  target_type = "ip"
  protocol    = "TCP"
  port        = var.relay_port
  vpc_id      = var.vpc_id

  # Deregistration delay = drain window + margin (see main.tf for the stop sequence).
  deregistration_delay = local.deregistration_delay_seconds
  # Keep streams open when the delay ends: the relay closes them itself, spread over its
  # drain window; an NLB reset would make every SDK of the task reconnect at the same instant.
  connection_termination = false

  # /readyz turns 503 when a relay is not caught up with Kafka. Marking it unhealthy must only
  # stop new streams, never reset the established ones (they still get the last good state
  # and the relay resumes them by itself, DESIGN.md §7).
  target_health_state {
    enable_unhealthy_connection_termination = false
  }

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

  lifecycle {
    precondition {
      condition     = local.deregistration_delay_seconds >= var.drain_window_seconds + 5
      error_message = "The deregistration delay must outlast the relay drain window by at least 5 s."
    }
  }
}

resource "aws_lb_listener" "relay" {
  #checkov:skip=CKV_AWS_103:ssl_policy comes from var.ssl_policy, whose validation only admits TLS 1.2+ policies (TLS13-*, TLS-1-2-*, FS-1-2-*); checkov cannot resolve the conditional.
  load_balancer_arn = aws_lb.relay.arn
  port              = var.listener_port
  protocol          = local.listener_protocol
  certificate_arn   = var.certificate_arn
  ssl_policy        = local.listener_protocol == "TLS" ? var.ssl_policy : null
  # SSE is HTTP/1.1; advertise it so clients never try h2 against the relay.
  alpn_policy = local.listener_protocol == "TLS" ? "HTTP1Only" : null
  # Only TCP listeners have a configurable idle timeout (TLS: fixed 350 s).
  tcp_idle_timeout_seconds = local.listener_protocol == "TCP" ? var.tcp_idle_timeout_seconds : null

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.relay.arn
  }

  tags = local.tags

  lifecycle {
    precondition {
      # Two missed heartbeats in a row must still not reach the idle timeout.
      condition     = local.effective_idle_timeout_seconds > 2 * var.heartbeat_interval_seconds
      error_message = "The NLB idle timeout must exceed twice the relay heartbeat interval, or idle SSE streams are cut."
    }
  }
}

locals {
  receivers = {
    prometheus = {
      config = {
        scrape_configs = [{
          job_name        = var.job_name
          scrape_interval = "${var.scrape_interval_seconds}s"
          scrape_timeout  = "${min(10, var.scrape_interval_seconds)}s"
          metrics_path    = var.metrics_path
          static_configs = [{
            targets = ["127.0.0.1:${var.scrape_port}"]
            labels  = var.dimensions
          }]
        }]
      }
    }
  }

  emf_exporter = {
    awsemf = {
      region                  = var.region
      namespace               = var.cloudwatch_namespace
      log_group_name          = var.emf_log_group_name
      log_stream_name         = "{TaskId}"
      dimension_rollup_option = "NoDimensionRollup"
      metric_declarations = [{
        dimensions            = [sort(keys(var.dimensions))]
        metric_name_selectors = var.cloudwatch_metric_selectors
      }]
    }
  }

  amp_exporter = var.amp_remote_write_url == null ? {} : {
    prometheusremotewrite = {
      endpoint = var.amp_remote_write_url
      auth     = { authenticator = "sigv4auth" }
    }
  }

  extensions = merge(
    { health_check = {} },
    var.amp_remote_write_url == null ? {} : { sigv4auth = { region = var.region, service = "aps" } },
  )

  collector_config = {
    extensions = local.extensions
    receivers  = local.receivers
    processors = {
      batch = { timeout = "30s" }
    }
    exporters = merge(local.emf_exporter, local.amp_exporter)
    service = {
      extensions = keys(local.extensions)
      pipelines = {
        metrics = {
          receivers  = ["prometheus"]
          processors = ["batch"]
          exporters  = keys(merge(local.emf_exporter, local.amp_exporter))
        }
      }
    }
  }

  collector_config_yaml = yamlencode(local.collector_config)

  container_definition = {
    name              = var.container_name
    image             = var.image
    essential         = false # losing metrics must never take the application task down
    cpu               = var.cpu
    memoryReservation = var.memory_reservation
    command           = ["--config=env:AOT_CONFIG_CONTENT"]
    environment = [
      { name = "AOT_CONFIG_CONTENT", value = local.collector_config_yaml },
    ]
    readonlyRootFilesystem = true
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = var.log_configuration.log_group_name
        awslogs-region        = var.region
        awslogs-stream-prefix = var.log_configuration.stream_prefix
        mode                  = "non-blocking"
        max-buffer-size       = "4m"
      }
    }
  }
}

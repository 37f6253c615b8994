# NixOS options nixos/module.nix sets that the shared stand-in evaluator
# (./stub-eval.nix, ./stub/: a byte-for-byte copy, not edited here) does not
# declare yet: services.prometheus (scrape jobs) and services.grafana
# (dashboard provisioning), for services.switchboard.metrics.*. Every
# evaluation of the module adds this file to the evaluator's modules
# (module_cases.py, render.nix, flake-smoke.nix), since the module defines
# these options, under mkIf, in every configuration, as NixOS declares them
# in every configuration. Move it into stub/options/services.nix (and the two
# names into stub-eval.nix's standInServices) when the shared copy is next
# updated.
#
# Declared after nixpkgs at Swarsel/nixpkgs 4aa6836a648ca76c68866decf0c8965e36ec2a3b
# (master after the 26.05 branch-off, the same reference as the rest of the
# stand-in):
#  - nixos/modules/services/monitoring/prometheus/default.nix: enable,
#    scrapeConfigs (listOf promTypes.scrape_config: job_name str, required;
#    the rest nullOr, default null; static_configs listOf static_config:
#    targets listOf str, required; labels attrsOf str, default { }). Only the
#    scrape_config fields listed below are declared; another real one fails
#    here as "does not exist" (add it after reading the declaration);
#  - nixos/modules/services/monitoring/grafana.nix: enable,
#    provision.dashboards (path nullOr path; settings nullOr submodule:
#    apiVersion int 1, providers listOf dashboardConfig: name str "default",
#    type str "file", options.path path, freeform YAML otherwise),
#    provision.datasources (path; settings: apiVersion, datasources listOf
#    datasourceConfig: name, type, url "", access proxy|direct, uid,
#    editable, jsonData, freeform YAML), settings.security.secret_key (nullOr
#    str, default null; the other sections of settings are freeform here,
#    the other keys of [security] not declared), and the
#    assertions on them (dashboards/datasources settings and path not both;
#    a secret key, required since 26.05). provision.enable is declared and
#    used nowhere in that module.
# As in ./stub/options/services.nix, only options and assertions: the
# servers' units and users are not stood in for (no module-run case runs
# them).
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption mkEnableOption mkIf types;
  yamlValue = (pkgs.formats.yaml { }).type;
  mkOpt = type: description: mkOption { default = null; type = types.nullOr type; inherit description; };

  staticConfig = types.submodule {
    options = {
      labels = mkOption { type = types.attrsOf types.str; default = { }; description = "Labels of the targets."; };
      targets = mkOption { type = types.listOf types.str; description = "The targets (host:port)."; };
    };
  };
  relabelConfig = types.submodule {
    options = {
      action = mkOpt (types.enum [ "replace" "lowercase" "uppercase" "keep" "drop" "hashmod" "labelmap" "labeldrop" "labelkeep" ]) "Action.";
      modulus = mkOpt types.int "Modulus.";
      regex = mkOpt types.str "Regular expression.";
      replacement = mkOpt types.str "Replacement.";
      separator = mkOpt types.str "Separator.";
      source_labels = mkOpt (types.listOf types.str) "Source labels.";
      target_label = mkOpt types.str "Target label.";
    };
  };
  scrapeConfig = types.submodule {
    options = {
      job_name = mkOption { type = types.str; description = "The job name."; };
      static_configs = mkOpt (types.listOf staticConfig) "Labeled target groups.";
      metrics_path = mkOpt types.str "HTTP path (Prometheus: /metrics).";
      scheme = mkOpt (types.enum [ "http" "https" ]) "URL scheme (Prometheus: http).";
      scrape_interval = mkOpt types.str "Interval (Prometheus: the global one).";
      scrape_timeout = mkOpt types.str "Timeout (Prometheus: the global one).";
      honor_labels = mkOpt types.bool "Keep the scraped labels on conflicts.";
      honor_timestamps = mkOpt types.bool "Keep the scraped timestamps.";
      params = mkOpt (types.attrsOf (types.listOf types.str)) "URL parameters.";
      relabel_configs = mkOpt (types.listOf relabelConfig) "Target relabelling.";
      metric_relabel_configs = mkOpt (types.listOf relabelConfig) "Metric relabelling.";
      sample_limit = mkOpt types.int "Samples per scrape (Prometheus: 0, no limit).";
    };
  };

  dashboardConfig = types.submodule {
    freeformType = yamlValue;
    options = {
      options.path = mkOption { type = types.path; description = "What a file provider reads."; };
      name = mkOption { type = types.str; default = "default"; description = "A unique provider name."; };
      type = mkOption { type = types.str; default = "file"; description = "Provider type."; };
    };
  };
  datasourceConfig = types.submodule {
    freeformType = yamlValue;
    options = {
      access = mkOption { type = types.enum [ "proxy" "direct" ]; default = "proxy"; description = "Access mode."; };
      editable = mkOption { type = types.bool; default = false; description = "Editable in the UI."; };
      jsonData = mkOption { type = types.nullOr types.attrs; default = null; description = "Plugin data."; };
      name = mkOption { type = types.str; description = "Name."; };
      secureJsonData = mkOption { type = types.nullOr types.attrs; default = null; description = "Secret plugin data."; };
      type = mkOption { type = types.str; description = "Type."; };
      uid = mkOption { type = types.nullOr types.str; default = null; description = "UID."; };
      url = mkOption { type = types.str; default = ""; description = "URL."; };
    };
  };
  provisioned = itemsName: itemType: mkOption {
    default = { };
    description = "Provisioning (${itemsName}).";
    type = types.submodule {
      options.path = mkOption { type = types.nullOr types.path; default = null; description = "YAML file or directory."; };
      options.settings = mkOption {
        default = null;
        description = "Provisioning configuration in Nix.";
        type = types.nullOr (types.submodule {
          options = {
            apiVersion = mkOption { type = types.int; default = 1; description = "Config file version."; };
            ${itemsName} = mkOption { type = types.listOf itemType; default = [ ]; description = "Items."; };
          };
        });
      };
    };
  };

  grafana = config.services.grafana;
in
{
  options.services.prometheus = {
    enable = mkEnableOption "Prometheus monitoring daemon";
    scrapeConfigs = mkOption { type = types.listOf scrapeConfig; default = [ ]; description = "Scrape configurations."; };
  };

  options.services.grafana = {
    enable = mkEnableOption "grafana";
    provision = {
      enable = mkEnableOption "provision";
      dashboards = provisioned "providers" dashboardConfig;
      datasources = provisioned "datasources" datasourceConfig;
    };
    settings = mkOption {
      default = { };
      description = "Grafana settings (INI); freeform here but for security.secret_key.";
      type = types.submodule {
        freeformType = types.attrsOf (types.attrsOf types.anything);
        options.security.secret_key = mkOption { type = types.nullOr types.str; default = null; description = "Secret key (use a file provider)."; };
      };
    };
  };

  config = mkIf grafana.enable {
    assertions = [
      {
        assertion = grafana.provision.datasources.settings == null || grafana.provision.datasources.path == null;
        message = "Cannot set both datasources settings and datasources path";
      }
      {
        assertion = grafana.provision.dashboards.settings == null || grafana.provision.dashboards.path == null;
        message = "Cannot set both dashboards settings and dashboards path";
      }
      {
        assertion = grafana.settings.security.secret_key != null;
        message = "Grafana's secret key (services.grafana.settings.security.secret_key) doesn't have a default value anymore.";
      }
    ];
  };
}

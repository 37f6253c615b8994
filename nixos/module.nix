# NixOS module: services.switchboard.
#
# The units themselves ship in the package (lib/systemd/system, the files in
# systemd/); this module enables them with `systemd.packages`, adds per-host
# drop-ins (listen addresses, ordering on the dependencies, credentials, the
# IP allow list), writes /etc/switchboard/<service>.toml from `settings`, and
# optionally sets up the dependency servers on this host.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib)
    mkIf
    mkMerge
    mkOption
    mkDefault
    types
    ;

  cfg = config.services.switchboard;
  settingsFormat = pkgs.formats.toml { };

  # Every service, its listening sockets (name -> default port), whether its
  # unit may reach the network at all (the front-end runs with
  # PrivateNetwork=yes), and whether switchboard.target starts it rather than
  # a first connection (the listener consumes RabbitMQ: it must run before
  # anyone connects to its one socket, the metrics door).
  serviceDefs = {
    broker = {
      description = "the API gateway";
      sockets = {
        http = 8080;
        metrics = 9180;
      };
      network = true;
      startWithTarget = false;
    };
    auth = {
      description = "user authentication (PostgreSQL)";
      sockets = {
        http = 8081;
        metrics = 9181;
      };
      network = true;
      startWithTarget = false;
    };
    logger = {
      description = "the central log store (MongoDB)";
      sockets = {
        http = 8082;
        rpc = 5001;
        grpc = 50001;
        metrics = 9182;
      };
      network = true;
      startWithTarget = false;
    };
    mail = {
      description = "the mail sender (SMTP)";
      sockets = {
        http = 8083;
        metrics = 9183;
      };
      network = true;
      startWithTarget = false;
    };
    listener = {
      description = "the RabbitMQ event listener";
      sockets.metrics = 9185;
      network = true;
      startWithTarget = true;
    };
    frontend = {
      description = "the test page";
      sockets = {
        http = 8084;
        metrics = 9184;
      };
      network = false;
      startWithTarget = false;
    };
  };
  serviceNames = lib.attrNames serviceDefs;

  # The unit names are those of the files in systemd/: a service's own name
  # for its `http` socket (switchboard-broker.socket), the name with the
  # socket's for any other (switchboard-broker-metrics.socket), and the
  # logger's three doors all with theirs (switchboard-logger-http.socket).
  serviceUnit = name: "switchboard-${name}";
  socketUnit =
    name: socket:
    if socket == "http" && name != "logger" then
      "switchboard-${name}"
    else
      "switchboard-${name}-${socket}";

  enabled = name: cfg.${name}.enable;

  # "127.0.0.1:8080", "[::1]:8080"
  hostPart = address: if lib.hasInfix ":" address then "[${address}]" else address;
  bindAddress = l: "${hostPart l.address}:${toString l.port}";
  # Where a client on this host connects to reach a listener: the wildcard
  # addresses are not connectable, their loopback counterpart is.
  connectHost =
    address:
    if address == "0.0.0.0" || address == "" then
      "127.0.0.1"
    else if address == "::" then
      "::1"
    else
      address;
  connectAddress = l: "${hostPart (connectHost l.address)}:${toString l.port}";
  httpUrl = l: "http://${connectAddress l}";
  isLoopback = address: lib.hasPrefix "127." address || address == "::1" || address == "localhost";
  isWildcard = address: address == "0.0.0.0" || address == "::" || address == "";

  # The hosts a client setting names: "amqp://u:p@10.0.0.5:5672/%2f",
  # "mongodb://a:27017,b:27017/?replicaSet=rs0", "postgres:///db?host=/run/postgresql",
  # "[::1]:5001", "smtp.example.com". Unix socket paths are left out: they
  # never leave the host.
  settingHosts =
    value:
    let
      hasScheme = lib.hasInfix "://" value;
      afterScheme = if hasScheme then lib.last (lib.splitString "://" value) else value;
      authority = lib.head (lib.splitString "/" (lib.head (lib.splitString "?" afterScheme)));
      hostPorts = lib.last (lib.splitString "@" authority);
      # libpq's `host=` query parameter (a unix directory or a host list).
      query = lib.optionalString (lib.hasInfix "?" afterScheme) (lib.last (lib.splitString "?" afterScheme));
      queryHosts = lib.concatMap (
        pair:
        lib.optionals (lib.hasPrefix "host=" pair) (lib.splitString "," (lib.removePrefix "host=" pair))
      ) (lib.splitString "&" query);
      hostOf =
        hostPort:
        if lib.hasPrefix "[" hostPort then
          lib.head (lib.splitString "]" (lib.removePrefix "[" hostPort))
        # A bare IPv6 address (several colons) has no port to strip.
        else if lib.length (lib.splitString ":" hostPort) > 2 then
          hostPort
        else
          lib.head (lib.splitString ":" hostPort);
    in
    lib.filter (host: host != "" && !lib.hasPrefix "/" host && !lib.hasPrefix "%2F" host) (
      map hostOf (lib.splitString "," hostPorts) ++ queryHosts
    );
  isIPv4 = host: builtins.match "[0-9]{1,3}(\\.[0-9]{1,3}){3}" host != null;
  isIPv6 = host: lib.hasInfix ":" host;
  isAddress = host: isIPv4 host || isIPv6 host;

  listenOption =
    name: socket: defaultPort:
    mkOption {
      description = ''
        Where the `${socket}` socket of switchboard-${name} listens. The
        address replaces the `ListenStream=` of the shipped socket unit, and
        is written to `listen.${socket}` in the service's settings.
      '';
      default = { };
      type = types.submodule {
        options = {
          address = mkOption (
            {
              type = types.str;
              default = "127.0.0.1";
              example = "0.0.0.0";
              description = "IP address to listen on (IPv6 without brackets).";
            }
            # The metrics doors share one default address of their own.
            // lib.optionalAttrs (socket == "metrics") {
              default = cfg.metrics.address;
              defaultText = lib.literalExpression "config.services.switchboard.metrics.address";
            }
          );
          port = mkOption {
            type = types.port;
            default = defaultPort;
            description = "TCP port.";
          };
        };
      };
    };

  serviceOptions =
    name: def:
    {
      enable = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Whether to run switchboard-${name}, ${def.description}, on this
          host (with {option}`services.switchboard.enable`). Disabled
          services have their units masked.
        '';
      };

      settings = mkOption {
        type = settingsFormat.type;
        default = { };
        example = lib.literalExpression ''{ runtime.log_filter = "debug"; }'';
        description = ''
          Configuration of switchboard-${name}, written to
          {file}`/etc/switchboard/${name}.toml`. The keys are those listed
          for `${name}` in the project's README (sections such as
          `runtime`, `listen`, ...). The module fills in the addresses of
          the other services and of the dependencies it manages, each
          with `lib.mkDefault`. Never put secrets here: the file is in the
          Nix store.
        '';
      };
    }
    // lib.optionalAttrs (def.sockets != { }) {
      listen = lib.mapAttrs (listenOption name) def.sockets;
    }
    // lib.optionalAttrs def.network {
      ipAddressAllow = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "10.0.0.0/8" ];
        description = ''
          Addresses or networks, in addition to
          {option}`services.switchboard.ipAddressAllow` and localhost,
          that switchboard-${name} may exchange packets with (added to
          `IPAddressAllow=`; the unit keeps `IPAddressDeny=any`). Needed
          when a dependency runs on another host. Connections arriving on
          the activation sockets are not filtered by this list.
        '';
      };
    };

  configFile = name: settingsFormat.generate "switchboard-${name}.toml" cfg.${name}.settings;

  # Dependencies this host runs for the enabled services.
  localPostgresql = enabled "auth" && cfg.postgresql.createLocally;
  localMongodb = enabled "logger" && cfg.mongodb.createLocally;
  localRabbitmq =
    lib.any enabled [
      "auth"
      "broker"
      "listener"
    ]
    && cfg.rabbitmq.createLocally;
  localMailhog = enabled "mail" && cfg.mailhog.createLocally;

  mongodbUnit = if cfg.mongodb.server == "ferretdb" then "ferretdb.service" else "mongodb.service";
  pg = config.services.postgresql;
  rabbitmqHost = connectHost config.services.rabbitmq.listenAddress;
  # RabbitMQ refuses guest anywhere but over loopback (loopback_users).
  rabbitmqUser = localRabbitmq && (!isLoopback rabbitmqHost || cfg.rabbitmq.passwordFile != null);
  rabbitmqUrl =
    let
      userinfo = if rabbitmqUser then cfg.rabbitmq.user else "guest:guest";
    in
    "amqp://${userinfo}@${hostPart rabbitmqHost}:${toString config.services.rabbitmq.port}/%2f";

  # What a browser that loaded the page from this front-end calls: with the
  # front-end on loopback, the broker's loopback address; exposed, the
  # broker's own address if it has one a browser can reach. null when only
  # the operator knows (broker on all addresses, or on loopback only).
  frontendExposed = !isLoopback cfg.frontend.listen.http.address;
  brokerAddress = cfg.broker.listen.http.address;
  pageBrokerUrl =
    if !enabled "broker" then
      null
    else if !frontendExposed then
      httpUrl cfg.broker.listen.http
    else if isWildcard brokerAddress || isLoopback brokerAddress then
      null
    else
      httpUrl cfg.broker.listen.http;

  # Units a service is ordered after and requires, on this host.
  rabbitmqUnits =
    lib.optional localRabbitmq "rabbitmq.service"
    ++ lib.optional rabbitmqUser "switchboard-rabbitmq-user.service";
  dependencyUnits = {
    auth = lib.optional localPostgresql "postgresql.target" ++ rabbitmqUnits;
    broker = rabbitmqUnits;
    listener = rabbitmqUnits;
    logger = lib.optional localMongodb mongodbUnit;
    mail = lib.optional localMailhog "mailhog.service";
    frontend = [ ];
  };

  # hasSetting "auth" "database.url": whether that key is set (by anyone).
  hasSetting = name: key: lib.hasAttrByPath (lib.splitString "." key) cfg.${name}.settings;

  # Credentials: the shipped units load each from the credential store when
  # present (the relative source switchboard-<id>). Where a file is
  # configured, the drop-in resets the list and names every credential of
  # the unit again, so that setting one file keeps the others' defaults.
  unitCredentials = {
    auth = {
      db-password = cfg.auth.databasePasswordFile;
      amqp-password = cfg.rabbitmq.passwordFile;
    };
    broker.amqp-password = cfg.rabbitmq.passwordFile;
    listener.amqp-password = cfg.rabbitmq.passwordFile;
    logger.mongodb-password = cfg.logger.mongodbPasswordFile;
    mail.smtp-password = cfg.mail.smtpPasswordFile;
    frontend = { };
  };
  credentialConfig =
    name:
    let
      credentials = unitCredentials.${name};
    in
    mkIf (lib.any (file: file != null) (lib.attrValues credentials)) {
      LoadCredential = [
        ""
      ]
      ++ lib.mapAttrsToList (
        id: file: if file == null then "${id}:switchboard-${id}" else "${id}:${file}"
      ) credentials;
    };
  passwordFiles = lib.filter (file: file != null) (
    lib.concatMap lib.attrValues (lib.attrValues unitCredentials)
  );

  # The settings in which each service names a host it connects to. Their
  # addresses are added to the unit's IPAddressAllow=; host names cannot be
  # (systemd takes addresses and networks only), so they need an allow list
  # from the operator, which an assertion asks for.
  # The trace collector (`telemetry.otlp_endpoint`) is one of them for every
  # service but the front-end, which has no network to export over.
  clientSettings = {
    auth = [
      "database.url"
      "events.amqp_url"
      "telemetry.otlp_endpoint"
    ];
    broker = [
      "events.amqp_url"
      "downstream.auth_url"
      "downstream.mail_url"
      "downstream.logger_http_url"
      "downstream.logger_rpc_addr"
      "downstream.logger_grpc_url"
      "telemetry.otlp_endpoint"
    ];
    listener = [
      "amqp.url"
      "logger.rpc_addr"
      "logger.http_url"
      "telemetry.otlp_endpoint"
    ];
    logger = [
      "mongodb.url"
      "telemetry.otlp_endpoint"
    ];
    mail = [
      "smtp.host"
      "telemetry.otlp_endpoint"
    ];
    frontend = [ ];
  };
  # [ { key = "smtp.host"; host = "smtp.example.com"; } ... ], loopback left out.
  remoteHosts =
    name:
    lib.concatMap (
      key:
      let
        value = lib.attrByPath (lib.splitString "." key) null cfg.${name}.settings;
      in
      map (host: { inherit key host; }) (
        lib.filter (host: !isLoopback host) (lib.optionals (lib.isString value) (settingHosts value))
      )
    ) clientSettings.${name};
  configuredAllow = name: cfg.ipAddressAllow ++ cfg.${name}.ipAddressAllow;
  ipAddressAllowFor =
    name:
    lib.unique (
      configuredAllow name ++ map (r: r.host) (lib.filter (r: isAddress r.host) (remoteHosts name))
    );
  remoteNames = name: lib.filter (r: !isAddress r.host) (remoteHosts name);

  # Every listening address on this host, to catch two sockets on one port.
  allListeners = lib.concatMap (
    name:
    lib.optionals (enabled name && serviceDefs.${name}.sockets != { }) (
      lib.mapAttrsToList (socket: l: {
        inherit name socket;
        port = l.port;
      }) cfg.${name}.listen
    )
  ) serviceNames;
  # The dashboard metrics.grafana provisions (a path in this repository is
  # read only when it is provisioned).
  dashboardFile =
    if cfg.metrics.grafana.dashboard != null then
      cfg.metrics.grafana.dashboard
    else
      ../observability/grafana/switchboard.json;

  # Enabled services whose metrics door listens on loopback only.
  loopbackMetrics = lib.filter (
    name: enabled name && isLoopback cfg.${name}.listen.metrics.address
  ) serviceNames;
  portClashes = lib.filter (
    a: lib.length (lib.filter (b: b.port == a.port) allListeners) > 1
  ) allListeners;

  # Assertions for a service that is enabled but has nowhere to reach a
  # dependency: not managed here and no address configured.
  needs = name: cond: message: {
    assertion = !(cfg.enable && enabled name) || cond;
    message = "services.switchboard.${name}: ${message}";
  };
in
{
  options.services.switchboard = {
    enable = lib.mkEnableOption "Switchboard, the microservices system (broker, auth, logger, mail, listener, front-end)";

    package = lib.mkPackageOption pkgs "switchboard" {
      extraDescription = "The flake's `nixosModules.default` sets this to the flake's own package.";
    };

    ipAddressAllow = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "192.168.1.10" ];
      description = ''
        Addresses or networks every Switchboard service (except the
        front-end, which has no network) may reach besides localhost, e.g.
        the hosts of PostgreSQL, MongoDB and RabbitMQ in a multi-host
        deployment. Added to `IPAddressAllow=`; `IPAddressDeny=any` stays.
      '';
    };

    postgresql.createLocally = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Run PostgreSQL on this host for switchboard-auth: database and role
        `switchboard-auth` (the unit's DynamicUser name), peer
        authentication over the unix socket, no password. Disable to use an
        existing server: set `services.switchboard.auth.settings.database.url`
        and, if it needs one, {option}`services.switchboard.auth.databasePasswordFile`.
      '';
    };

    mongodb = {
      createLocally = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Run a MongoDB-compatible server on this host for
          switchboard-logger, listening on 127.0.0.1:27017. Disable to use
          an existing one: set `services.switchboard.logger.settings.mongodb.url`.
        '';
      };
      server = mkOption {
        type = types.enum [
          "mongodb"
          "ferretdb"
        ];
        default = "ferretdb";
        description = ''
          Which server {option}`services.switchboard.mongodb.createLocally`
          runs: `ferretdb` ({option}`services.ferretdb`, free software,
          evaluates on every host), or `mongodb` ({option}`services.mongodb`
          with package `pkgs.mongodb-ce`, which is unfree (SSPL): allow it
          with `nixpkgs.config.allowUnfreePredicate` in the host's
          configuration; the flake's own allowance does not reach it).
        '';
      };
      ferretdbBackend = mkOption {
        type = types.enum [
          "sqlite"
          "sqlite-normal"
          "postgresql"
        ];
        default = "sqlite";
        example = "postgresql";
        description = ''
          Where the local FerretDB ({option}`services.switchboard.mongodb.server`
          `ferretdb`) keeps the documents. `sqlite`: nixpkgs' default, SQLite
          files in `/var/lib/ferretdb` with an fsync per commit. `sqlite-normal`:
          the same files with `synchronous=NORMAL` (no fsync on commit: an
          acknowledged entry survives a crash of FerretDB, not of the machine).
          `postgresql`: FerretDB's PostgreSQL handler, in a database `ferretdb`
          owned by the role `ferretdb` on the local
          {option}`services.postgresql` (peer authentication over its socket),
          which the benchmark measured as the fastest of the three, with the
          shortest write tail and reads that are not a scan of SQLite files
          (see the README's Performance section). The default stays `sqlite`
          because entries already stored in SQLite are not moved by a change.
        '';
      };
    };

    rabbitmq = {
      createLocally = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Run RabbitMQ on this host for switchboard-auth, -broker and
          -listener. Over loopback the services connect as `guest`; when
          {option}`services.rabbitmq.listenAddress` is another address
          (RabbitMQ lets `guest` in over loopback only), or whenever
          {option}`services.switchboard.rabbitmq.passwordFile` is set,
          the module creates the user
          {option}`services.switchboard.rabbitmq.user` with that password
          (switchboard-rabbitmq-user.service) and the services connect as
          that user. Disable to use an existing broker: set
          `settings.events.amqp_url` of auth and broker and
          `settings.amqp.url` of the listener (user name in the URL, the
          password in {option}`services.switchboard.rabbitmq.passwordFile`).
        '';
      };
      user = mkOption {
        type = types.str;
        default = "switchboard";
        description = "RabbitMQ user the module creates for the services (with a password file).";
      };
      passwordFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/run/keys/switchboard-amqp-password";
        description = ''
          File holding the RabbitMQ password of the services' user, passed
          to switchboard-auth, -broker and -listener as the systemd
          credential `amqp-password` (`LoadCredential=`), so it may be
          readable by root only. It replaces the password of the AMQP URL.
          Required when the local RabbitMQ is not reached over loopback.
        '';
      };
    };

    mailhog.createLocally = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Run MailHog on this host and send switchboard-mail's messages to it.
        For development and tests only: MailHog delivers nothing. In
        production set `services.switchboard.mail.settings.smtp.host` (and
        port, encryption, username) to a real relay and the password with
        {option}`services.switchboard.mail.smtpPasswordFile`.
      '';
    };

    metrics = {
      address = mkOption {
        type = types.str;
        default = "127.0.0.1";
        example = "0.0.0.0";
        description = ''
          Where every service's metrics door listens by default (its
          `metrics` socket, serving `GET /metrics` in Prometheus text
          format on the service's own port: broker 9180, auth 9181, logger
          9182, mail 9183, frontend 9184, listener 9185). One service's
          door: {option}`services.switchboard.<service>.listen.metrics`.
          The doors answer anyone who reaches them: expose them to the
          network only for a Prometheus on another host, and only there
          (see {option}`services.switchboard.metrics.openFirewall`).
        '';
      };
      openFirewall = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Open the metrics ports of the enabled services in the firewall,
          for a Prometheus on another host (with
          {option}`services.switchboard.metrics.address` not on loopback).
        '';
      };
      prometheus.enable = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Add one scrape job per enabled service to
          {option}`services.prometheus.scrapeConfigs`: job
          `switchboard-<service>`, target its metrics door as reached from
          this host. Prometheus itself is {option}`services.prometheus.enable`.
        '';
      };
      grafana = {
        enable = mkOption {
          type = types.bool;
          default = false;
          description = ''
            Provision the Switchboard dashboard
            ({option}`services.switchboard.metrics.grafana.dashboard`) into
            Grafana: a dashboard provider `switchboard` (folder
            `Switchboard`) in
            {option}`services.grafana.provision.dashboards.settings.providers`.
            Grafana itself is {option}`services.grafana.enable`; the
            dashboard reads a Prometheus data source, which
            {option}`services.grafana.provision.datasources` can provide.
          '';
        };
        dashboard = mkOption {
          type = types.nullOr types.path;
          default = null;
          example = lib.literalExpression "./switchboard-dashboard.json";
          description = ''
            The dashboard (Grafana's JSON model) that
            {option}`services.switchboard.metrics.grafana.enable`
            provisions; `null` is the project's own,
            `observability/grafana/switchboard.json` of its repository.
          '';
        };
      };
    };

    broker = serviceOptions "broker" serviceDefs.broker // {
      openFirewall = mkOption {
        type = types.bool;
        default = false;
        description = "Open the broker's HTTP port in the firewall.";
      };
    };
    auth = serviceOptions "auth" serviceDefs.auth // {
      databasePasswordFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/run/keys/switchboard-db-password";
        description = ''
          File holding the PostgreSQL password, passed to switchboard-auth
          as the systemd credential `db-password` (`LoadCredential=`), so
          it may be readable by root only. Unneeded with the local server.
        '';
      };
    };
    logger = serviceOptions "logger" serviceDefs.logger // {
      mongodbPasswordFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/run/keys/switchboard-mongodb-password";
        description = ''
          File holding the MongoDB password of the user named in
          `logger.settings.mongodb.url`, passed to switchboard-logger as
          the systemd credential `mongodb-password` (`LoadCredential=`),
          so it may be readable by root only.
        '';
      };
    };
    mail = serviceOptions "mail" serviceDefs.mail // {
      smtpPasswordFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/run/keys/smtp-password";
        description = ''
          File holding the SMTP password, passed to switchboard-mail as the
          systemd credential `smtp-password` (`LoadCredential=`), so it
          may be readable by root only.
        '';
      };
    };
    listener = serviceOptions "listener" serviceDefs.listener;
    frontend = serviceOptions "frontend" serviceDefs.frontend // {
      openFirewall = mkOption {
        type = types.bool;
        default = false;
        description = "Open the front-end's HTTP port in the firewall.";
      };
    };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      assertions = [
        (needs "auth" (localPostgresql || hasSetting "auth" "database.url")
          "has no PostgreSQL: enable services.switchboard.postgresql.createLocally or set services.switchboard.auth.settings.database.url."
        )
        (needs "auth" (localRabbitmq || hasSetting "auth" "events.amqp_url")
          "has no RabbitMQ: enable services.switchboard.rabbitmq.createLocally or set services.switchboard.auth.settings.events.amqp_url."
        )
        (needs "broker" (localRabbitmq || hasSetting "broker" "events.amqp_url")
          "has no RabbitMQ: enable services.switchboard.rabbitmq.createLocally or set services.switchboard.broker.settings.events.amqp_url."
        )
        (needs "listener" (localRabbitmq || hasSetting "listener" "amqp.url")
          "has no RabbitMQ: enable services.switchboard.rabbitmq.createLocally or set services.switchboard.listener.settings.amqp.url."
        )
        (needs "logger" (localMongodb || hasSetting "logger" "mongodb.url")
          "has no MongoDB: enable services.switchboard.mongodb.createLocally or set services.switchboard.logger.settings.mongodb.url."
        )
        (needs "mail" (localMailhog || hasSetting "mail" "smtp.host")
          "has no SMTP server: set services.switchboard.mail.settings.smtp.host (a real relay), or services.switchboard.mailhog.createLocally = true for development."
        )
        (needs "broker" (enabled "auth" || hasSetting "broker" "downstream.auth_url")
          "switchboard-auth is not enabled on this host: set services.switchboard.broker.settings.downstream.auth_url to where it runs."
        )
        (needs "broker" (enabled "mail" || hasSetting "broker" "downstream.mail_url")
          "switchboard-mail is not enabled on this host: set services.switchboard.broker.settings.downstream.mail_url to where it runs."
        )
        (needs "broker"
          (
            enabled "logger"
            || lib.all (hasSetting "broker") [
              "downstream.logger_http_url"
              "downstream.logger_rpc_addr"
              "downstream.logger_grpc_url"
            ]
          )
          "switchboard-logger is not enabled on this host: set services.switchboard.broker.settings.downstream.logger_http_url, logger_rpc_addr and logger_grpc_url to where it runs."
        )
        (needs "listener"
          (
            enabled "logger"
            || hasSetting "listener" "logger.rpc_addr"
            || hasSetting "listener" "logger.http_url"
          )
          "switchboard-logger is not enabled on this host: set services.switchboard.listener.settings.logger.rpc_addr (or http_url with logger.via = \"http\") to where it runs."
        )
        {
          assertion = portClashes == [ ];
          message = "services.switchboard: several sockets listen on one port: ${
            lib.concatMapStringsSep ", " (l: "${l.name}.listen.${l.socket} (${toString l.port})") portClashes
          }.";
        }
        {
          assertion = lib.all (lib.hasPrefix "/") passwordFiles;
          message = "services.switchboard: password files (auth.databasePasswordFile, mail.smtpPasswordFile, rabbitmq.passwordFile, logger.mongodbPasswordFile) must be absolute paths.";
        }
        {
          assertion = !localRabbitmq || isLoopback rabbitmqHost || cfg.rabbitmq.passwordFile != null;
          message = "services.switchboard: the services reach the local RabbitMQ at ${rabbitmqHost} (services.rabbitmq.listenAddress), not over loopback, where RabbitMQ refuses the guest user: set services.switchboard.rabbitmq.passwordFile to a file holding a password, and the module creates the RabbitMQ user \"${cfg.rabbitmq.user}\" with it.";
        }
        (needs "frontend" (!frontendExposed || pageBrokerUrl != null || hasSetting "frontend" "page.broker_url")
          "listens on ${cfg.frontend.listen.http.address}, so browsers on other machines load the page, and they must reach the broker at an address of this host that the module cannot know (the broker listens on ${brokerAddress}): set services.switchboard.frontend.settings.page.broker_url to the broker's URL as those browsers reach it (e.g. \"http://switchboard.example.org:${toString cfg.broker.listen.http.port}\")."
        )
      ]
      # Host names cannot go into IPAddressAllow=: without an allow list from
      # the operator, the unit's IPAddressDeny=any drops every packet to them.
      ++ map (
        name:
        let
          names = remoteNames name;
        in
        needs name (names == [ ] || configuredAllow name != [ ])
          "${
            lib.concatMapStringsSep ", " (r: "${r.key} names the host \"${r.host}\"") names
          }, but the unit only reaches localhost (IPAddressDeny=any) and IPAddressAllow= takes addresses and networks, not host names: add the addresses or networks of ${
            lib.concatMapStringsSep ", " (r: r.host) (lib.unique names)
          } to services.switchboard.${name}.ipAddressAllow (or services.switchboard.ipAddressAllow), and those of the DNS servers unless names are resolved through localhost (systemd-resolved)."
      ) (lib.filter (name: serviceDefs.${name}.network) serviceNames);

      warnings =
        lib.optional
          (cfg.broker.openFirewall && enabled "broker" && isLoopback cfg.broker.listen.http.address)
          "services.switchboard.broker.openFirewall is set, but the broker listens on ${cfg.broker.listen.http.address} only: set services.switchboard.broker.listen.http.address."
        ++
          lib.optional
            (cfg.frontend.openFirewall && enabled "frontend" && isLoopback cfg.frontend.listen.http.address)
            "services.switchboard.frontend.openFirewall is set, but the front-end listens on ${cfg.frontend.listen.http.address} only: set services.switchboard.frontend.listen.http.address."
        ++
          lib.optional (cfg.mailhog.createLocally && cfg.mail.smtpPasswordFile != null)
            "services.switchboard.mail.smtpPasswordFile is set, but mail goes to the local MailHog, which ignores it."
        ++
          lib.optional (cfg.metrics.openFirewall && loopbackMetrics != [ ])
            "services.switchboard.metrics.openFirewall is set, but the metrics doors of ${lib.concatStringsSep ", " loopbackMetrics} listen on loopback only: set services.switchboard.metrics.address (or services.switchboard.<service>.listen.metrics.address)."
        ++
          lib.optional (cfg.metrics.prometheus.enable && !config.services.prometheus.enable)
            "services.switchboard.metrics.prometheus.enable adds scrape jobs to services.prometheus.scrapeConfigs, but services.prometheus.enable is not set: no Prometheus on this host runs them."
        ++
          lib.optional (cfg.metrics.grafana.enable && !config.services.grafana.enable)
            "services.switchboard.metrics.grafana.enable provisions the dashboard into services.grafana, but services.grafana.enable is not set: no Grafana on this host shows it.";

      systemd.packages = [ cfg.package ];

      # The package's [Install] sections are not used on NixOS: wire up here.
      systemd.targets.switchboard.wantedBy = [ "multi-user.target" ];

      environment.etc = lib.listToAttrs (
        map (name: lib.nameValuePair "switchboard/${name}.toml" { source = configFile name; }) (
          lib.filter enabled serviceNames
        )
      );

      networking.firewall.allowedTCPPorts =
        lib.optional (cfg.broker.openFirewall && enabled "broker") cfg.broker.listen.http.port
        ++ lib.optional (cfg.frontend.openFirewall && enabled "frontend") cfg.frontend.listen.http.port
        ++ lib.optionals cfg.metrics.openFirewall (
          map (name: cfg.${name}.listen.metrics.port) (lib.filter enabled serviceNames)
        );
    }

    # Units: drop-ins for enabled services, masks for disabled ones (so that
    # switchboard.target's Wants= on them are no-ops).
    {
      systemd.services = lib.listToAttrs (
        map (
          name:
          lib.nameValuePair (serviceUnit name) (
            if enabled name then
              {
                after = dependencyUnits.${name};
                requires = dependencyUnits.${name};
                wantedBy = lib.optional serviceDefs.${name}.startWithTarget "switchboard.target";
                restartTriggers = [ (configFile name) ];
                serviceConfig = mkMerge [
                  (mkIf (serviceDefs.${name}.network && ipAddressAllowFor name != [ ]) {
                    IPAddressAllow = ipAddressAllowFor name;
                  })
                  (credentialConfig name)
                ];
              }
            else
              { enable = false; }
          )
        ) serviceNames
      );

      systemd.sockets = lib.listToAttrs (
        lib.concatMap (
          name:
          lib.mapAttrsToList (
            socket: _:
            lib.nameValuePair (socketUnit name socket) (
              if enabled name then
                {
                  wantedBy = [ "switchboard.target" ];
                  # A drop-in appends to the shipped ListenStream=: reset first.
                  listenStreams = [
                    ""
                    (bindAddress cfg.${name}.listen.${socket})
                  ];
                }
              else
                { enable = false; }
            )
          ) serviceDefs.${name}.sockets
        ) serviceNames
      );
    }

    # Settings the module knows: listen addresses and where the other
    # services are. All mkDefault, so an explicit setting wins.
    {
      # A `listen` section for every service with sockets (every service
      # since the metrics doors; the listener's holds only `metrics`).
      services.switchboard =
        lib.genAttrs (lib.filter (name: serviceDefs.${name}.sockets != { }) serviceNames)
          (name: {
            settings.listen = lib.mapAttrs (_: l: mkDefault (bindAddress l)) cfg.${name}.listen;
          });
    }
    {
      services.switchboard.broker.settings.downstream = mkMerge [
        (mkIf (enabled "auth") { auth_url = mkDefault (httpUrl cfg.auth.listen.http); })
        (mkIf (enabled "mail") { mail_url = mkDefault (httpUrl cfg.mail.listen.http); })
        (mkIf (enabled "logger") {
          logger_http_url = mkDefault (httpUrl cfg.logger.listen.http);
          logger_rpc_addr = mkDefault (connectAddress cfg.logger.listen.rpc);
          logger_grpc_url = mkDefault (httpUrl cfg.logger.listen.grpc);
        })
      ];
      services.switchboard.listener.settings.logger = mkIf (enabled "logger") {
        rpc_addr = mkDefault (connectAddress cfg.logger.listen.rpc);
        http_url = mkDefault (httpUrl cfg.logger.listen.http);
      };
      services.switchboard.frontend.settings.page = mkIf (pageBrokerUrl != null) {
        broker_url = mkDefault pageBrokerUrl;
      };
    }

    # Monitoring: a scrape job per enabled service for the local Prometheus,
    # the dashboard for the local Grafana.
    (mkIf cfg.metrics.prometheus.enable {
      services.prometheus.scrapeConfigs = map (name: {
        job_name = "switchboard-${name}";
        static_configs = [ { targets = [ (connectAddress cfg.${name}.listen.metrics) ]; } ];
      }) (lib.filter enabled serviceNames);
    })

    (mkIf cfg.metrics.grafana.enable {
      services.grafana.provision.dashboards.settings.providers = [
        {
          name = "switchboard";
          type = "file";
          folder = "Switchboard";
          # A directory holding the file itself (not a link to it), which is
          # what a file provider's path reads.
          options.path = pkgs.runCommandLocal "switchboard-grafana-dashboards" { } ''
            install -D -m 0444 ${dashboardFile} "$out/switchboard.json"
          '';
        }
      ];
    })

    (mkIf localPostgresql {
      # Peer authentication maps the unit's DynamicUser name (the unit name,
      # switchboard-auth) to the role of the same name, which owns the
      # database of the same name.
      services.postgresql = {
        enable = true;
        ensureDatabases = [ "switchboard-auth" ];
        ensureUsers = [
          {
            name = "switchboard-auth";
            ensureDBOwnership = true;
          }
        ];
      };
      services.switchboard.auth.settings.database.url =
        mkDefault "postgres:///switchboard-auth?host=/run/postgresql&port=${toString pg.settings.port}&user=switchboard-auth";
    })

    (mkIf (rabbitmqUser && cfg.rabbitmq.passwordFile != null) {
      # The services' RabbitMQ user, created (or its password set) from the
      # password file before any of them connects.
      systemd.services.switchboard-rabbitmq-user = {
        description = "Switchboard: the services' RabbitMQ user";
        after = [ "rabbitmq.service" ];
        requires = [ "rabbitmq.service" ];
        partOf = [ "switchboard.target" ];
        path = [ config.services.rabbitmq.package ];
        environment.HOME = config.services.rabbitmq.dataDir;
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          # rabbitmqctl authenticates to the node with the cookie in HOME.
          User = "rabbitmq";
          Group = "rabbitmq";
          LoadCredential = [ "amqp-password:${cfg.rabbitmq.passwordFile}" ];
        };
        # The password travels on stdin, never on a command line.
        script = ''
          user=${lib.escapeShellArg cfg.rabbitmq.user}
          rabbitmqctl await_startup
          if rabbitmqctl -q list_users | cut -f1 | grep -qxF -- "$user"; then
            rabbitmqctl change_password "$user" <"$CREDENTIALS_DIRECTORY/amqp-password"
          else
            rabbitmqctl add_user "$user" <"$CREDENTIALS_DIRECTORY/amqp-password"
          fi
          rabbitmqctl set_permissions -p / "$user" '.*' '.*' '.*'
        '';
      };
    })

    (mkIf localRabbitmq {
      services.rabbitmq.enable = true;
      services.switchboard.auth.settings.events.amqp_url = mkDefault rabbitmqUrl;
      services.switchboard.broker.settings.events.amqp_url = mkDefault rabbitmqUrl;
      services.switchboard.listener.settings.amqp.url = mkDefault rabbitmqUrl;
    })

    (mkIf (localMongodb && cfg.mongodb.server == "mongodb") {
      services.mongodb = {
        enable = true;
        package = mkDefault pkgs.mongodb-ce;
      };
      services.switchboard.logger.settings.mongodb.url = mkDefault "mongodb://127.0.0.1:27017";
    })

    (mkIf (localMongodb && cfg.mongodb.server == "ferretdb") {
      services.ferretdb = {
        enable = true;
        settings = {
          FERRETDB_LISTEN_ADDR = mkDefault "127.0.0.1:27017";
        }
        // lib.optionalAttrs (cfg.mongodb.ferretdbBackend == "sqlite-normal") {
          FERRETDB_SQLITE_URL = mkDefault "file:/var/lib/ferretdb/?_pragma=synchronous(normal)";
        }
        // lib.optionalAttrs (cfg.mongodb.ferretdbBackend == "postgresql") {
          FERRETDB_HANDLER = mkDefault "pg";
          FERRETDB_POSTGRESQL_URL = mkDefault "postgres://ferretdb@localhost:${toString pg.settings.port}/ferretdb?host=/run/postgresql";
        };
      };
      # FerretDB has no readiness notification (Type=simple): without this,
      # "started" means "forked", and the logger's first connection races it.
      systemd.services.ferretdb.postStart =
        let
          hostPort = config.services.ferretdb.settings.FERRETDB_LISTEN_ADDR;
          port = lib.last (lib.splitString ":" hostPort);
          host = connectHost (lib.removeSuffix ":${port}" hostPort);
        in
        ''
          for _ in $(seq 600); do
            if (exec 3<>/dev/tcp/${lib.removeSuffix "]" (lib.removePrefix "[" host)}/${port}) 2>/dev/null; then
              exit 0
            fi
            sleep 0.1
          done
          echo "FerretDB is not listening on ${hostPort} after 60 s" >&2
          exit 1
        '';
      services.switchboard.logger.settings.mongodb.url = mkDefault "mongodb://127.0.0.1:27017";
    })

    (mkIf (localMongodb && cfg.mongodb.server == "ferretdb" && cfg.mongodb.ferretdbBackend == "postgresql") {
      # FerretDB's unit has DynamicUser=yes: its user is named after the unit,
      # ferretdb, which peer authentication maps to the role of that name.
      services.postgresql = {
        enable = true;
        ensureDatabases = [ "ferretdb" ];
        ensureUsers = [
          {
            name = "ferretdb";
            ensureDBOwnership = true;
          }
        ];
      };
      systemd.services.ferretdb = {
        after = [ "postgresql.target" ];
        requires = [ "postgresql.target" ];
      };
    })

    (mkIf localMailhog {
      services.mailhog.enable = true;
      # MailHog's sendmail would replace the host's own MTA wrapper; the
      # services talk SMTP to it and need no sendmail.
      services.mailhog.setSendmail = mkDefault false;
      services.switchboard.mail.settings.smtp = {
        host = mkDefault "127.0.0.1";
        port = mkDefault config.services.mailhog.smtpPort;
      };
    })
  ]);
}

# Three VMs: `db` runs PostgreSQL, MongoDB, RabbitMQ and an SMTP server
# (MailHog), `app` runs the Switchboard services pointed at them, `client`
# only talks to app's broker. Proves that the module works with dependencies on
# another host (TCP, the database and RabbitMQ passwords passed as
# credentials, the IP allow lists derived by the module from the addresses in
# the settings) and that only the broker is reachable from outside (the
# metrics doors answer on app itself).
#
# Called from flake.nix: (import ./multi-host.nix { inherit self; }) is a
# module for pkgs.testers.runNixOSTest.
{ self }:
let
  # Test-only secrets; a real deployment keeps them out of the store.
  dbPassword = "switchboard-vm-db";
  amqpPassword = "switchboard-vm-amqp";
in
{
  name = "switchboard-multi-host";

  nodes = {
    db =
      { nodes, pkgs, ... }:
      {
        virtualisation.memorySize = 2048;

        services.postgresql = {
          enable = true;
          enableTCPIP = true;
          authentication = ''
            host switchboard switchboard ${nodes.app.networking.primaryIPAddress}/32 scram-sha-256
          '';
          initialScript = pkgs.writeText "switchboard-init.sql" ''
            CREATE ROLE switchboard LOGIN PASSWORD '${dbPassword}';
            CREATE DATABASE switchboard OWNER switchboard;
          '';
        };

        services.mongodb = {
          enable = true;
          package = pkgs.mongodb-ce;
          bind_ip = "0.0.0.0";
        };

        services.rabbitmq = {
          enable = true;
          listenAddress = "0.0.0.0";
          # guest may only log in over loopback: a user for the app host.
          configItems = {
            default_user = "switchboard";
            default_pass = amqpPassword;
          };
        };

        services.mailhog.enable = true;

        networking.firewall.allowedTCPPorts = [
          5432
          27017
          5672
          1025
        ];

        environment.etc."switchboard-test/seed-user.sql".text = ''
          INSERT INTO users (email, first_name, last_name, password, user_active, created_at, updated_at)
          VALUES ('vmtest@example.com', 'VM', 'Test',
                  '$2b$10$aK5rkW98MnFka5Z6G8OtCe.Q58P6kKhY7cHtJTdzypyz1EJrBaJfW', '1', now(), now())
          ON CONFLICT (email) DO NOTHING;
        '';
        environment.systemPackages = [ pkgs.curl ];
      };

    app =
      { nodes, pkgs, ... }:
      let
        db = nodes.db.networking.primaryIPAddress;
        # No password here: it comes from rabbitmq.passwordFile, as the
        # credential amqp-password.
        amqpUrl = "amqp://switchboard@${db}:5672/%2f";
      in
      {
        imports = [ self.nixosModules.default ];

        virtualisation = {
          memorySize = 2048;
          cores = 2;
        };

        services.switchboard = {
          enable = true;
          postgresql.createLocally = false;
          mongodb.createLocally = false;
          rabbitmq.createLocally = false;
          rabbitmq.passwordFile = "${pkgs.writeText "switchboard-amqp-password" amqpPassword}";
          # No ipAddressAllow: the module allows db's address in every unit
          # whose settings name it; IPAddressDeny=any stays.

          broker = {
            listen.http.address = "0.0.0.0";
            openFirewall = true;
            settings.events.amqp_url = amqpUrl;
          };
          auth = {
            settings.database.url = "postgres://switchboard@${db}:5432/switchboard";
            databasePasswordFile = "${pkgs.writeText "switchboard-db-password" dbPassword}";
            settings.events.amqp_url = amqpUrl;
          };
          listener.settings.amqp.url = amqpUrl;
          logger.settings.mongodb.url = "mongodb://${db}:27017";
          mail.settings.smtp = {
            host = db;
            port = 1025;
          };
        };

        environment.systemPackages = [ pkgs.curl ];
      };

    client =
      { pkgs, ... }:
      {
        environment.systemPackages = [
          pkgs.curl
          pkgs.netcat
        ];
      };
  };

  testScript = ''
    import json
    import shlex

    def request(method, url, body=None):
        """(status, text) of one HTTP request made on the client."""
        command = f"curl -s -o /tmp/response -w '%{{http_code}}' -X {method} {shlex.quote(url)}"
        if body is not None:
            command += " -H 'Content-Type: application/json' --data-binary " + shlex.quote(json.dumps(body))
        status = client.succeed(command).strip()
        return int(status), client.succeed("cat /tmp/response")

    def expect(method, url, body, status):
        got, text = request(method, url, body)
        assert got == status, f"{method} {url} {body}: expected {status}, got {got}: {text}"
        return text

    def logged(name, data):
        """Waits until app's logger returns an entry NAME with DATA."""
        app.wait_until_succeeds(
            f"curl -sf 'http://127.0.0.1:8082/logs?name={name}' | grep -F {shlex.quote(data)}", timeout=90
        )

    broker = "http://app:8080"

    # The dependencies first: app has no local units to order itself after,
    # and a listener that cannot reach RabbitMQ would exhaust its start limit.
    db.start()
    for unit in ["postgresql.target", "rabbitmq.service", "mongodb.service", "mailhog.service"]:
        db.wait_for_unit(unit)
    for port in [5432, 5672, 27017, 1025]:
        db.wait_for_open_port(port)
    app.start()
    client.start()
    app.wait_for_unit("switchboard.target")
    app.wait_for_unit("switchboard-listener.service")
    client.wait_for_unit("multi-user.target")

    with subtest("only the broker is reachable from outside"):
        client.wait_until_succeeds("nc -z -w 3 app 8080")
        for port in [8081, 8082, 8083, 8084, 5001, 50001, 9180, 9181, 9182, 9183, 9184, 9185]:
            client.fail(f"nc -z -w 3 app {port}")
        expect("GET", f"{broker}/ping", None, 200)

    with subtest("the broker's metrics door answers on app's loopback"):
        text = app.succeed("curl -sf --max-time 10 http://127.0.0.1:9180/metrics")
        assert "process_resident_memory_bytes" in text, text[:300]

    with subtest("auth against PostgreSQL on db, password from a credential"):
        wrong = {"action": "auth", "auth": {"email": "vmtest@example.com", "password": "wrong"}}
        expect("POST", f"{broker}/handle", wrong, 401)
        db.wait_until_succeeds(
            "runuser -u postgres -- psql -d switchboard -tAc 'SELECT 1 FROM users LIMIT 0'", timeout=60
        )
        db.succeed("runuser -u postgres -- psql -d switchboard -v ON_ERROR_STOP=1 -f /etc/switchboard-test/seed-user.sql")
        right = {"action": "auth", "auth": {"email": "vmtest@example.com", "password": "vm-test-password"}}
        reply = json.loads(expect("POST", f"{broker}/handle", right, 202))
        assert reply["data"]["email"] == "vmtest@example.com", reply
        logged("authentication", "vmtest@example.com logged in")

    with subtest("logs over every transport reach MongoDB on db"):
        for via in ["rpc", "grpc", "http", "amqp"]:
            body = {"action": "log", "log": {"name": f"mh-{via}", "data": f"sent via {via}", "via": via}}
            expect("POST", f"{broker}/handle", body, 202)
        for via in ["rpc", "grpc", "http", "amqp"]:
            logged(f"mh-{via}", f"sent via {via}")

    with subtest("mail goes to the SMTP server on db"):
        body = {"action": "mail", "mail": {"from": "me@example.com", "to": "you@example.com",
                                           "subject": "multi-host", "message": "Hello from app"}}
        expect("POST", f"{broker}/handle", body, 202)
        db.wait_until_succeeds(
            "curl -sf 'http://127.0.0.1:8025/api/v2/search?kind=to&query=you@example.com' | grep -F multi-host", timeout=60
        )
  '';
}

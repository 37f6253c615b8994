# One VM with every service and every dependency (PostgreSQL, FerretDB,
# RabbitMQ, MailHog) on it: socket activation, every broker path end to end,
# every service's metrics door, the journal, the sandbox scores and the IP
# allow list.
#
# Called from flake.nix: (import ./basic.nix { inherit self; }) is a module
# for pkgs.testers.runNixOSTest.
{ self }:
{
  name = "switchboard-basic";

  nodes.machine =
    { pkgs, ... }:
    {
      imports = [ self.nixosModules.default ];

      virtualisation = {
        memorySize = 3072;
        cores = 2;
        diskSize = 4096;
      };

      services.switchboard = {
        enable = true;
        mailhog.createLocally = true;
        # tower-http reports each request at debug level.
        broker.settings.runtime.log_filter = "info,tower_http=debug";
      };

      # A user for the auth path. The password is "vm-test-password"; the
      # hash is bcrypt (cost 10). '1' fits user_active as integer or boolean.
      environment.etc."switchboard-test/seed-user.sql".text = ''
        INSERT INTO users (email, first_name, last_name, password, user_active, created_at, updated_at)
        VALUES ('vmtest@example.com', 'VM', 'Test',
                '$2b$10$aK5rkW98MnFka5Z6G8OtCe.Q58P6kKhY7cHtJTdzypyz1EJrBaJfW', '1', now(), now())
        ON CONFLICT (email) DO NOTHING;
      '';

      # Something outside the services' allow list: this host's own address
      # on the test network (not localhost).
      systemd.services.outside-probe = {
        wantedBy = [ "multi-user.target" ];
        serviceConfig.ExecStart = "${pkgs.python3}/bin/python3 -m http.server --bind 0.0.0.0 9999";
        serviceConfig.WorkingDirectory = "/var/empty";
        serviceConfig.DynamicUser = true;
      };

      environment.systemPackages = [ pkgs.curl ];
    };

  testScript =
    { nodes, ... }:
    let
      outsideAddress = nodes.machine.networking.primaryIPAddress;
      # The MongoDB-protocol server the module runs (FerretDB by default).
      mongodbUnit =
        if nodes.machine.services.switchboard.mongodb.server == "ferretdb" then
          "ferretdb.service"
        else
          "mongodb.service";
    in
    ''
      import json
      import shlex

      def request(method, url, body=None):
          """(status, text) of one HTTP request made inside the VM."""
          command = f"curl -s -o /tmp/response -w '%{{http_code}}' -X {method} {shlex.quote(url)}"
          if body is not None:
              command += " -H 'Content-Type: application/json' --data-binary " + shlex.quote(json.dumps(body))
          status = machine.succeed(command).strip()
          return int(status), machine.succeed("cat /tmp/response")

      def expect(method, url, body, status):
          got, text = request(method, url, body)
          assert got == status, f"{method} {url} {body}: expected {status}, got {got}: {text}"
          return text

      def logged(name, data):
          """Waits until the logger returns an entry NAME with DATA."""
          machine.wait_until_succeeds(
              f"curl -sf 'http://127.0.0.1:8082/logs?name={name}' | grep -F {shlex.quote(data)}", timeout=60
          )

      broker = "http://127.0.0.1:8080"
      metrics_ports = {"broker": 9180, "auth": 9181, "logger": 9182, "mail": 9183, "frontend": 9184, "listener": 9185}

      machine.wait_for_unit("switchboard.target")
      for unit in ["postgresql.target", "rabbitmq.service", "${mongodbUnit}", "mailhog.service"]:
          machine.wait_for_unit(unit)
      machine.wait_for_unit("switchboard-listener.service")
      machine.succeed("test -s /etc/switchboard/broker.toml")

      with subtest("socket activation: a service starts on its first connection"):
          # Nothing may connect before this check (wait_for_open_port would).
          for service in ["broker", "auth", "mail", "frontend"]:
              machine.succeed(f"systemctl is-active switchboard-{service}.socket")
              machine.fail(f"systemctl is-active switchboard-{service}.service")
          for socket in ["http", "rpc", "grpc"]:
              machine.succeed(f"systemctl is-active switchboard-logger-{socket}.socket")
          for service in metrics_ports:
              machine.succeed(f"systemctl is-active switchboard-{service}-metrics.socket")
          expect("GET", f"{broker}/ping", None, 200)
          machine.succeed("systemctl is-active switchboard-broker.service")
          text = expect("POST", f"{broker}/", None, 200)
          assert "Hit the broker" in text, text
          expect("GET", "http://127.0.0.1:8084/", None, 200)
          machine.succeed("systemctl is-active switchboard-frontend.service")

      with subtest("auth: 202 for the right password, 401 otherwise"):
          wrong = {"action": "auth", "auth": {"email": "vmtest@example.com", "password": "wrong"}}
          expect("POST", f"{broker}/handle", wrong, 401)
          # The first request started auth, which ran its migrations.
          machine.wait_until_succeeds(
              "runuser -u postgres -- psql -d switchboard-auth -tAc 'SELECT 1 FROM users LIMIT 0'", timeout=60
          )
          machine.succeed("runuser -u postgres -- psql -d switchboard-auth -v ON_ERROR_STOP=1 -f /etc/switchboard-test/seed-user.sql")
          right = {"action": "auth", "auth": {"email": "vmtest@example.com", "password": "vm-test-password"}}
          reply = json.loads(expect("POST", f"{broker}/handle", right, 202))
          assert reply["error"] is False and reply["data"]["email"] == "vmtest@example.com", reply
          assert "password" not in reply["data"], reply
          expect("POST", f"{broker}/handle", wrong, 401)
          # The login event goes RabbitMQ -> listener -> logger.
          logged("authentication", "vmtest@example.com logged in")

      with subtest("log over every transport lands in the database"):
          for via in ["rpc", "grpc", "http", "amqp"]:
              body = {"action": "log", "log": {"name": f"vm-{via}", "data": f"sent via {via}", "via": via}}
              expect("POST", f"{broker}/handle", body, 202)
          expect("POST", f"{broker}/log-grpc", {"name": "vm-log-grpc", "data": "sent to /log-grpc"}, 202)
          for via in ["rpc", "grpc", "http", "amqp"]:
              logged(f"vm-{via}", f"sent via {via}")
          logged("vm-log-grpc", "sent to /log-grpc")

      with subtest("mail lands in MailHog"):
          body = {"action": "mail", "mail": {"from": "me@example.com", "to": "you@example.com",
                                             "subject": "VM test", "message": "Hello from the VM test"}}
          reply = json.loads(expect("POST", f"{broker}/handle", body, 202))
          assert "you@example.com" in reply["message"], reply
          machine.wait_until_succeeds(
              "curl -sf 'http://127.0.0.1:8025/api/v2/search?kind=to&query=you@example.com' | grep -F 'VM test'", timeout=60
          )

      with subtest("bad input is a 400"):
          expect("POST", f"{broker}/handle", {"action": "nonsense"}, 400)

      with subtest("every service's metrics door answers in Prometheus text format"):
          # By now every service runs; the scrape reaches the same process
          # (systemd passed it the metrics socket with its others).
          for service, port in metrics_ports.items():
              pid = machine.succeed(f"systemctl show -P MainPID switchboard-{service}.service").strip()
              text = machine.succeed(f"curl -sf --max-time 10 http://127.0.0.1:{port}/metrics")
              assert "process_resident_memory_bytes" in text, f"{service}: {text[:300]}"
              after = machine.succeed(f"systemctl show -P MainPID switchboard-{service}.service").strip()
              assert pid == after and pid != "0", f"{service}: MainPID {pid} -> {after}"

      with subtest("the broker's requests are in the journal"):
          # The request span's fields (method, path, request id) are journal fields.
          machine.succeed("journalctl -u switchboard-broker.service -o verbose --no-pager | grep -F /handle")

      with subtest("sandbox: systemd-analyze security exposure"):
          for service, limit in [("broker", 10), ("auth", 10), ("logger", 10), ("mail", 10), ("listener", 10), ("frontend", 5)]:
              report = machine.succeed(f"systemd-analyze security --no-pager switchboard-{service}.service | tail -n 1")
              print(report)
              # --threshold counts tenths: 10 is an exposure of 1.0.
              machine.succeed(f"systemd-analyze security --threshold={limit} switchboard-{service}.service > /dev/null")

      with subtest("IPAddressDeny= blocks what the allow list does not name"):
          outside = "http://${outsideAddress}:9999/"
          machine.wait_for_open_port(9999)
          machine.succeed(f"curl -sf --max-time 5 -o /dev/null {outside}")
          # A process moved into the broker's cgroup is filtered like the broker.
          in_broker = (
              "sh -c 'echo $$ > /sys/fs/cgroup$(systemctl show -P ControlGroup switchboard-broker.service)/cgroup.procs"
              " && exec curl -sf --max-time 5 -o /dev/null {}'"
          )
          machine.succeed(in_broker.format("http://127.0.0.1:8082/healthz"))
          machine.fail(in_broker.format(outside))
    '';
}

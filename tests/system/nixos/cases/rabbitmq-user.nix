# The node of nixos/tests/basic.nix with a RabbitMQ password file, for
# tests/system/module-run: the module then creates its own RabbitMQ user
# (switchboard-rabbitmq-user.service, the password from a credential on
# stdin) and auth, broker and listener connect as that user with the
# credential amqp-password instead of as guest.
{ self }:
let
  basic = import ../../../../nixos/tests/basic.nix { inherit self; };
in
{
  name = "switchboard-rabbitmq-user";

  nodes.machine = {
    imports = [ basic.nodes.machine ];
    # A test password: in the Nix store, as any environment.etc text is.
    environment.etc."switchboard-test/amqp-password" = {
      text = "module-run-amqp-password";
      mode = "0400";
    };
    services.switchboard.rabbitmq.passwordFile = "/etc/switchboard-test/amqp-password";
  };

  testScript = builtins.readFile ./rabbitmq-user.py;
}

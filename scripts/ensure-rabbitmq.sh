#!/usr/bin/env bash
# Makes Debian's rabbitmq-server (and its Erlang) available: the tests run the lifecycle and fault tests
# on RabbitMQ as the broker too (AITASKS_BROKER_URL), against a private server they start themselves
# (tests/rabbitmq_server.py: own ports, data, epmd and cookie); the package's own service is never used.
# apt-get as root or with sudo. Without it, says so and goes on: the RabbitMQ tests then fail, saying why.
set -euo pipefail
if [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] && command -v erl >/dev/null 2>&1; then exit 0; fi
echo "rabbitmq-server not found: installing Debian's rabbitmq-server" >&2
bash "$(dirname "$0")/apt-install.sh" rabbitmq-server && exit 0
echo "WARNING: could not install rabbitmq-server (needs apt-get as root or passwordless sudo)." >&2
echo "         tests/test_broker_amqp.py will fail until /usr/lib/rabbitmq/bin/rabbitmq-server exists." >&2
exit 0

# A local S3 server (moto) for the tests. Source this file, then:
#
#   s3_server_start            # installs moto into tests/.venv if needed, starts it
#   trap s3_server_stop EXIT   # stops it whatever the tests' result
#
# s3_server_start exports:
#   AERIE_TEST_S3_ENDPOINT   http://127.0.0.1:PORT, the running server
#   AERIE_TEST_S3_PIDFILE    a file holding the server's pid
#   AERIE_TEST_MOTO          the moto_server executable, for a test that runs its own server
#                            (e.g. one it kills on purpose): "$AERIE_TEST_MOTO" -H 127.0.0.1 -p PORT
#   AERIE_TEST_PYTHON        the virtualenv's python, with prometheus_client (the metrics
#                            tests parse /metrics with its Prometheus text parser)
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION   static test credentials
#   AWS_EC2_METADATA_DISABLED=true                          nothing reaches for the network
#
# moto keeps everything in memory: every test creates its own bucket.

_aerie_s3_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
_aerie_s3_venv="$_aerie_s3_dir/.venv"

# Creates the virtualenv and installs moto's server and prometheus_client into it, unless
# already there.
s3_server_install() {
    # A venv made without ensurepip (Debian's python3 lacks it until python3-venv is
    # installed) has no pip: start again from scratch.
    if [ -x "$_aerie_s3_venv/bin/python" ] &&
        ! "$_aerie_s3_venv/bin/python" -m pip --version >/dev/null 2>&1; then
        rm -rf "$_aerie_s3_venv"
    fi
    if [ ! -x "$_aerie_s3_venv/bin/python" ]; then
        echo "s3-server: creating the virtualenv $_aerie_s3_venv" >&2
        if ! python3 -m venv "$_aerie_s3_venv" >/dev/null 2>&1; then
            rm -rf "$_aerie_s3_venv"
            if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
                echo "s3-server: installing python3-venv" >&2
                apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
            fi
            python3 -m venv "$_aerie_s3_venv" || {
                echo "s3-server: python3 -m venv failed (on Debian: apt-get install python3-venv)" >&2
                return 1
            }
        fi
    fi
    if [ ! -x "$_aerie_s3_venv/bin/moto_server" ]; then
        echo "s3-server: installing moto[server] into $_aerie_s3_venv" >&2
        "$_aerie_s3_venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            'moto[server]>=5,<6' || {
            echo "s3-server: pip install 'moto[server]' failed" >&2
            return 1
        }
    fi
    if ! "$_aerie_s3_venv/bin/python" -c 'import prometheus_client' >/dev/null 2>&1; then
        echo "s3-server: installing prometheus_client into $_aerie_s3_venv" >&2
        "$_aerie_s3_venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            'prometheus_client>=0.20,<1' || {
            echo "s3-server: pip install prometheus_client failed" >&2
            return 1
        }
    fi
}

# Installs moto if needed, starts it on a free loopback port and waits until it answers.
s3_server_start() {
    s3_server_install || return 1
    local py="$_aerie_s3_venv/bin/python"
    local port
    port="$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')" || return 1

    export AWS_ACCESS_KEY_ID=test
    export AWS_SECRET_ACCESS_KEY=test
    export AWS_REGION=us-east-1
    export AWS_EC2_METADATA_DISABLED=true
    export AERIE_TEST_MOTO="$_aerie_s3_venv/bin/moto_server"
    export AERIE_TEST_PYTHON="$py"
    export AERIE_TEST_S3_ENDPOINT="http://127.0.0.1:$port"
    export AERIE_TEST_S3_PIDFILE="$_aerie_s3_venv/moto-$port.pid"
    local log="$_aerie_s3_venv/moto-$port.log"

    "$AERIE_TEST_MOTO" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
    echo $! >"$AERIE_TEST_S3_PIDFILE"

    local i
    for i in $(seq 1 150); do
        if "$py" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
            "$AERIE_TEST_S3_ENDPOINT/" >/dev/null 2>&1; then
            echo "s3-server: moto listening on $AERIE_TEST_S3_ENDPOINT (log: $log)" >&2
            return 0
        fi
        if ! kill -0 "$(cat "$AERIE_TEST_S3_PIDFILE")" 2>/dev/null; then
            echo "s3-server: moto_server exited at start; its log:" >&2
            cat "$log" >&2
            return 1
        fi
        sleep 0.2
    done
    echo "s3-server: moto did not answer on $AERIE_TEST_S3_ENDPOINT within 30 s; its log:" >&2
    cat "$log" >&2
    s3_server_stop
    return 1
}

# Stops the server s3_server_start started; does nothing when none is running.
s3_server_stop() {
    local pidfile="${AERIE_TEST_S3_PIDFILE:-}"
    if [ -n "$pidfile" ] && [ -f "$pidfile" ]; then
        local pid
        pid="$(cat "$pidfile")"
        if kill "$pid" 2>/dev/null; then
            local i
            for i in $(seq 1 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$pidfile"
    fi
    unset AERIE_TEST_S3_ENDPOINT AERIE_TEST_S3_PIDFILE
    return 0
}

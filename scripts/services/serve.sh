# Sourced by the scripts that run a live `pedinorm serve` (scripts/services/schemathesis.sh,
# validation/peers/service_load.sh, validation/peers/service_schemathesis.sh): one way to start
# it on a loopback port and wait until it listens, one way to stop it.
#
#   source scripts/services/serve.sh
#   start_service BINARY WORK [serve arguments…]   # sets $server (pid), $address, $base
#   stop_service                                    # in the EXIT trap, before removing WORK

# Starts `BINARY serve [arguments…] --address-file WORK/address` in the background (output in
# WORK/server.log) and returns once it has written its address; fails after 10 s.
start_service() {
  local binary=$1 work=$2
  shift 2
  "$binary" serve "$@" --address-file "$work/address" >"$work/server.log" 2>&1 &
  server=$!
  for _ in $(seq 1 100); do [ -s "$work/address" ] && break; sleep 0.1; done
  if [ ! -s "$work/address" ]; then
    echo "pedinorm serve did not start; see $work/server.log:" >&2
    tail -n 20 "$work/server.log" >&2
    return 1
  fi
  address="$(cat "$work/address")"
  base="http://$address"
}

# Stops the server started by start_service and waits for it to exit (it may still be writing
# its state, which must not race the removal of its folder).
stop_service() {
  if [ -n "${server:-}" ]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
}

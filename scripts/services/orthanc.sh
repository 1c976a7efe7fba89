#!/usr/bin/env bash
# Start or stop a local Orthanc (REST + DICOMweb) with authentication, for the service tests.
#
#   scripts/services/orthanc.sh start   # prints the environment to export (PEDINORM_ORTHANC_*)
#   scripts/services/orthanc.sh stop
#
# Environment: ORTHANC_DIR (state, default .data/orthanc), ORTHANC_HTTP_PORT (default 8042),
# ORTHANC_DICOM_PORT (default 4242), ORTHANC_USER / ORTHANC_PASSWORD (default pedinorm / a
# random password kept in ORTHANC_DIR/password).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dir="${ORTHANC_DIR:-$root/.data/orthanc}"
http_port="${ORTHANC_HTTP_PORT:-8042}"
dicom_port="${ORTHANC_DICOM_PORT:-4242}"
user="${ORTHANC_USER:-pedinorm}"
pid_file="$dir/orthanc.pid"

install_if_missing() {
  if ! command -v Orthanc >/dev/null 2>&1 || ! ls /usr/share/orthanc/plugins/libOrthancDicomWeb.so >/dev/null 2>&1; then
    echo "installing Debian packages orthanc orthanc-dicomweb" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 install -y orthanc orthanc-dicomweb >&2
  fi
}

dicomweb_plugin() {
  for candidate in /usr/share/orthanc/plugins/libOrthancDicomWeb.so /usr/lib/orthanc/plugins/libOrthancDicomWeb.so; do
    if [ -e "$candidate" ]; then echo "$candidate"; return; fi
  done
  dpkg -L orthanc-dicomweb | grep -m1 'libOrthancDicomWeb.so' || { echo "DICOMweb plugin not found" >&2; exit 1; }
}

start() {
  if [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
    echo "Orthanc already running (pid $(cat "$pid_file"))" >&2
  else
    install_if_missing
    mkdir -p "$dir/db"
    chmod 700 "$dir"
    if [ -n "${ORTHANC_PASSWORD:-}" ]; then
      printf '%s\n' "$ORTHANC_PASSWORD" > "$dir/password"
    elif [ ! -s "$dir/password" ]; then
      head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$dir/password"
    fi
    chmod 600 "$dir/password"
    local password
    password="$(head -n1 "$dir/password")"
    local plugin
    plugin="$(dicomweb_plugin)"
    cat > "$dir/orthanc.json" <<JSON
{
  "Name": "pedinorm-test-pacs",
  "StorageDirectory": "$dir/db",
  "IndexDirectory": "$dir/db",
  "HttpPort": $http_port,
  "DicomPort": $dicom_port,
  "RemoteAccessAllowed": false,
  "AuthenticationEnabled": true,
  "RegisteredUsers": { "$user": "$password" },
  "Plugins": [ "$plugin" ],
  "DicomWeb": { "Enable": true, "Root": "/dicom-web/", "EnableWado": true, "StudiesMetadata": "Full", "SeriesMetadata": "Full" },
  "StableAge": 1,
  "HttpTimeout": 60,
  "ConcurrentJobs": 2
}
JSON
    chmod 600 "$dir/orthanc.json"
    nohup Orthanc "$dir/orthanc.json" > "$dir/orthanc.log" 2>&1 &
    echo $! > "$pid_file"
    for _ in $(seq 1 100); do
      if curl -fsS -u "$user:$password" "http://127.0.0.1:$http_port/system" >/dev/null 2>&1; then
        break
      fi
      if ! kill -0 "$(cat "$pid_file")" 2>/dev/null; then
        echo "Orthanc exited; see $dir/orthanc.log" >&2
        tail -n 20 "$dir/orthanc.log" >&2
        exit 1
      fi
      sleep 0.1
    done
    curl -fsS -u "$user:$password" "http://127.0.0.1:$http_port/dicom-web/studies" >/dev/null \
      || { echo "Orthanc answers but DICOMweb does not; see $dir/orthanc.log" >&2; exit 1; }
    echo "Orthanc ready on http://127.0.0.1:$http_port (pid $(cat "$pid_file"))" >&2
  fi
  echo "export PEDINORM_ORTHANC_URL=http://127.0.0.1:$http_port"
  echo "export PEDINORM_ORTHANC_USER=$user"
  echo "export PEDINORM_ORTHANC_PASSWORD_FILE=$dir/password"
}

stop() {
  if [ -f "$pid_file" ]; then
    local pid
    pid="$(cat "$pid_file")"
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$pid_file"
    echo "Orthanc stopped" >&2
  else
    echo "Orthanc not running" >&2
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac

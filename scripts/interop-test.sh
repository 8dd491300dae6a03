#!/usr/bin/env bash
# Interoperability with a real non-browser WebRTC stack: GStreamer's webrtcbin publishes
# over WHIP and plays over WHEP through the server binary (tests/interop/gst_whip_whep.py).
# On Debian 12 webrtcbin is 1.22: libnice ICE and OpenSSL DTLS with an RSA certificate.
#
# libnice gathers no candidate on a LOOPBACK interface unless told the address, so the
# script names 127.0.0.1 to it (GST_ICE_LOCAL_IP): no network namespace or veth needed,
# which some CI kernels lack. Installs GStreamer when missing; fails with a clear message
# when it cannot.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "interop tests: $*" >&2; exit 1; }

. scripts/lib.sh

py=/usr/bin/python3
probe() {
  "$py" - <<'PY' 2>/dev/null
import gi
gi.require_version("Gst", "1.0"); gi.require_version("GstWebRTC", "1.0"); gi.require_version("GstSdp", "1.0")
from gi.repository import Gst
Gst.init(None)
missing = [e for e in ("webrtcbin", "nicesrc", "vp8enc", "vp8dec", "opusenc", "opusdec",
                     "rtpvp8pay", "rtpopuspay", "videotestsrc", "audiotestsrc")
         if Gst.ElementFactory.find(e) is None]
raise SystemExit(1 if missing else 0)
PY
}
if ! [ -x "$py" ] || ! probe; then
  apt_install "GStreamer webrtcbin" python3 python3-gi gir1.2-gstreamer-1.0 \
    gir1.2-gst-plugins-base-1.0 gir1.2-gst-plugins-bad-1.0 gstreamer1.0-plugins-base \
    gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-nice
  probe || die "GStreamer is installed but webrtcbin or a codec element is missing"
fi
cargo build -p manifold -j2 --quiet || die "the server binary does not build"

log=$(mktemp)
trap 'kill ${server:-} 2>/dev/null || true; wait ${server:-} 2>/dev/null || true; rm -f "$log"' EXIT
start_server "$log" --listen 127.0.0.1:0 --port-base 0 --workers 2 --log-level warn \
  --media-bind 127.0.0.1

echo "--- GStreamer WHIP publisher + WHEP player against $url"
if ! GST_ICE_LOCAL_IP=127.0.0.1 timeout 60 /usr/bin/python3 tests/interop/gst_whip_whep.py "$url" interop 10; then
  echo "--- server log" >&2
  cat "$log" >&2
  die "GStreamer did not publish and play through the server"
fi
# Both sessions were deleted: the server holds nobody.
stats=$(curl -sf "$url/stats") || die "no /stats"
echo "$stats" | grep -q '"participants":0' || die "sessions left after DELETE: $stats"
echo "interop: ok"

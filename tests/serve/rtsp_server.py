"""A test RTSP server: GStreamer's RTSP server streaming MJPEG over RTP on 127.0.0.1.

Run with Debian's system Python (it needs `gi`, from python3-gi and gir1.2-gst-rtsp-server-1.0):

    /usr/bin/python3 rtsp_server.py PORT [WIDTHxHEIGHT] [FPS]

It serves rtsp://127.0.0.1:PORT/test (a moving SMPTE test pattern), prints "ready" once listening,
and stops on SIGTERM or SIGINT.
"""

import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    port = sys.argv[1]
    width, height = (int(v) for v in (sys.argv[2] if len(sys.argv) > 2 else "320x240").split("x"))
    fps = int(sys.argv[3]) if len(sys.argv) > 3 else 15
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( videotestsrc is-live=true pattern=smpte horizontal-speed=4 ! "
        f"video/x-raw,format=I420,width={width},height={height},framerate={fps}/1 ! "
        "jpegenc quality=85 ! rtpjpegpay name=pay0 pt=26 )"
    )
    factory.set_shared(True)
    server.get_mount_points().add_factory("/test", factory)
    if server.attach(None) == 0:
        sys.exit(f"rtsp_server: cannot listen on 127.0.0.1:{port}")
    print("ready", flush=True)
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    loop.run()


if __name__ == "__main__":
    main()

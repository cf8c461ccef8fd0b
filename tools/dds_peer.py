#!/usr/bin/env python3
"""An independent ROS 2 peer over real DDS (PyPI cyclonedds, the C core behind rmw_cyclonedds).

Used by tests/it/dds_transport.rs and tests/it/dds_e2e.rs. The DDS types are built at run time from
message definitions, never from the Rust code:
  * sensor_msgs, std_msgs, builtin_interfaces, diagnostic_msgs, geometry_msgs: the rosbags
    ROS2_JAZZY typestore;
  * yolact_ros2_msgs: the repository's msg/*.msg files (--msg-dir);
  * vision_msgs (not in rosbags): VISION_MSGS below, the .msg text of vision_msgs 4.1.1 (ros2
    branch), comments stripped.
ROS 2 naming over DDS: topic `rt/<name>`, type `pkg::msg::dds_::Type_`, XCDR1 (final) structs.

Modes (each prints one JSON object per line; the last line is the summary):
  transport  publish Images, expect DiagnosticArray echoes from the Rust side, call lifecycle
             services (Cyclone request/reply mapping)
  node       publish Images to `yolact node`, collect InstanceArray / Detection2DArray /
             DiagnosticArray, flood, call change_state
  depth      publish CameraInfo + an aligned 16UC1 depth image (a plane at --plane-mm) + a colour
             Image with the same stamp, frame by frame; collect InstanceArray, Detection3DArray,
             PointCloud2 (only with --points: a subscriber exists only then; points decoded from
             the cloud's own fields) and DiagnosticArray. --bad-info zero-fx / wrong-size sends a
             broken CameraInfo instead.
"""

import argparse
import json
import os
import struct
import sys
import time

from cyclonedds.core import Policy, Qos
from cyclonedds.domain import DomainParticipant
from cyclonedds.idl import annotations as annotate
from cyclonedds.idl import make_idl_struct, types
from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from cyclonedds.util import duration
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.base import Nodetype

VISION_MSGS = {
    "vision_msgs/msg/Detection2DArray": "std_msgs/Header header\nDetection2D[] detections\n",
    "vision_msgs/msg/Detection2D": (
        "std_msgs/Header header\nObjectHypothesisWithPose[] results\nBoundingBox2D bbox\nstring id\n"
    ),
    "vision_msgs/msg/ObjectHypothesisWithPose": (
        "ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n"
    ),
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score\n",
    "vision_msgs/msg/BoundingBox2D": "Pose2D center\nfloat64 size_x\nfloat64 size_y\n",
    "vision_msgs/msg/Pose2D": "Point2D position\nfloat64 theta\n",
    "vision_msgs/msg/Point2D": "float64 x\nfloat64 y\n",
    "vision_msgs/msg/Detection3DArray": "std_msgs/Header header\nDetection3D[] detections\n",
    "vision_msgs/msg/Detection3D": (
        "std_msgs/Header header\nObjectHypothesisWithPose[] results\nBoundingBox3D bbox\nstring id\n"
    ),
    "vision_msgs/msg/BoundingBox3D": "geometry_msgs/Pose center\ngeometry_msgs/Vector3 size\n",
}

# lifecycle_msgs services: not messages, so not in the typestore's message set; the request and
# response fields from lifecycle_msgs/srv/*.srv (Jazzy).
LIFECYCLE_MSGS = {
    "lifecycle_msgs/msg/Transition": "uint8 id\nstring label\n",
    "lifecycle_msgs/msg/State": "uint8 id\nstring label\n",
    "lifecycle_msgs/msg/TransitionDescription": (
        "Transition transition\nState start_state\nState goal_state\n"
    ),
}

BASE = {
    "bool": bool,
    "byte": types.uint8,
    "char": types.uint8,
    "int8": types.int8,
    "uint8": types.uint8,
    "int16": types.int16,
    "uint16": types.uint16,
    "int32": types.int32,
    "uint32": types.uint32,
    "int64": types.int64,
    "uint64": types.uint64,
    "float32": types.float32,
    "float64": types.float64,
    "string": str,
}


class Types:
    """cyclonedds IdlStruct classes for ROS types, from definitions in a rosbags typestore."""

    def __init__(self, msg_dir):
        self.store = get_typestore(Stores.ROS2_JAZZY)
        extra = {}
        for defs in (VISION_MSGS, LIFECYCLE_MSGS):
            for name, text in defs.items():
                extra.update(get_types_from_msg(text, name))
        for fname in sorted(os.listdir(msg_dir)):
            if fname.endswith(".msg"):
                with open(os.path.join(msg_dir, fname)) as f:
                    name = "yolact_ros2_msgs/msg/" + fname[: -len(".msg")]
                    extra.update(get_types_from_msg(f.read(), name))
        self.store.register(extra)
        self.classes = {}

    def field_type(self, node):
        kind, arg = node
        if kind == Nodetype.BASE:
            return BASE[arg[0]]
        if kind == Nodetype.NAME:
            return self.cls(arg)
        if kind == Nodetype.ARRAY:
            sub, n = arg
            return types.array[self.field_type(sub), n]
        if kind == Nodetype.SEQUENCE:
            sub, _bound = arg
            return types.sequence[self.field_type(sub)]
        raise ValueError(f"unsupported field {node}")

    def struct(self, class_name, dds_type, fields):
        return annotate.final(make_idl_struct(class_name, dds_type, fields))

    def cls(self, ros_type):
        if ros_type not in self.classes:
            _consts, fields = self.store.fielddefs[ros_type]
            pkg, kind, name = ros_type.split("/")
            fdict = {fname: self.field_type(node) for fname, node in fields}
            self.classes[ros_type] = self.struct(
                name.replace("/", "_"), f"{pkg}::{kind}::dds_::{name}_", fdict
            )
        return self.classes[ros_type]

    def service(self, srv, part, fields):
        """A request/reply struct with rmw_cyclonedds' 16-byte header (client GUID, sequence)."""
        pkg, name = srv.split("/")
        fdict = {"header_guid": types.uint64, "header_seq": types.int64}
        if not fields:
            fdict["structure_needs_at_least_one_member"] = types.uint8
        for fname, ros_type in fields:
            fdict[fname] = ros_type
        return self.struct(f"{name}_{part}", f"{pkg}::srv::dds_::{name}_{part}_", fdict)


def to_dict(obj):
    if hasattr(obj, "__dataclass_fields__"):
        return {k: to_dict(getattr(obj, k)) for k in obj.__dataclass_fields__}
    if isinstance(obj, (list, tuple)):
        return [to_dict(x) for x in obj]
    if isinstance(obj, bytes):
        return list(obj)
    if isinstance(obj, float) and obj != obj:
        # JSON has no NaN (mask_iou of a model without the mask-IoU head).
        return "NaN"
    return obj


def emit(kind, **kw):
    print(json.dumps({"kind": kind, **kw}, allow_nan=False), flush=True)


def qos(reliable, depth):
    rel = Policy.Reliability.Reliable(duration(milliseconds=100)) if reliable else Policy.Reliability.BestEffort
    return Qos(
        rel,
        Policy.Durability.Volatile,
        Policy.History.KeepLast(depth),
        Policy.DataRepresentation(use_cdrv0_representation=True),
    )


def multicast_available():
    """Whether an interface other than loopback is up with IFF_MULTICAST (0x1000)."""
    try:
        for name in os.listdir("/sys/class/net"):
            if name == "lo":
                continue
            with open(f"/sys/class/net/{name}/flags") as f:
                flags = int(f.read().strip(), 16)
            with open(f"/sys/class/net/{name}/operstate") as f:
                up = f.read().strip() in ("up", "unknown")
            if up and flags & 0x1000:
                return True
    except OSError:
        return True  # not Linux sysfs: leave discovery to the defaults
    return False


def unicast_discovery():
    """Without multicast, Cyclone sends SPDP to unicast peers on 127.0.0.1; RustDDS (which has
    no peer list of its own) answers every participant that reaches it."""
    os.environ["CYCLONEDDS_URI"] = (
        "<CycloneDDS><Domain><General><AllowMulticast>false</AllowMulticast></General>"
        "<Discovery><ParticipantIndex>auto</ParticipantIndex><MaxAutoParticipantIndex>50"
        "</MaxAutoParticipantIndex><Peers><Peer address=\"127.0.0.1\"/></Peers></Discovery>"
        "</Domain></CycloneDDS>"
    )


class Peer:
    def __init__(self, args):
        self.args = args
        if args.unicast or not multicast_available():
            unicast_discovery()
            emit("discovery", mode="unicast")
        self.dp = DomainParticipant(args.domain)
        self.t = Types(args.msg_dir)
        ns = args.namespace.rstrip("/")
        self.ns = ns
        self.Image = self.t.cls("sensor_msgs/msg/Image")
        self.Header = self.t.cls("std_msgs/msg/Header")
        self.Time = self.t.cls("builtin_interfaces/msg/Time")
        self.readers = {}

    def topic(self, name, cls):
        return Topic(self.dp, "rt" + name, cls)

    def writer(self, name, cls, reliable=True, depth=10):
        return DataWriter(self.dp, self.topic(name, cls), qos=qos(reliable, depth))

    def reader(self, key, name, ros_type, reliable=True, depth=100):
        cls = self.t.cls(ros_type)
        self.readers[key] = DataReader(self.dp, self.topic(name, cls), qos=qos(reliable, depth))

    def image(self, i, width, height, frame_id, stamp=None):
        files = self.args.image_files
        if files:
            # Frame i is the i-th file (cycled): raw rgb8 rows, exactly width x height.
            with open(files[i % len(files)], "rb") as f:
                data = f.read()
            if len(data) != width * height * 3:
                raise SystemExit(f"{files[i % len(files)]}: {len(data)} bytes, not {width}x{height} rgb8")
        else:
            data = bytes(((x * 7 + i * 13) % 256) for x in range(width * height * 3))
        if stamp is None:
            stamp = self.Time(sec=1000 + i, nanosec=500_000_000 + i)
        return self.Image(
            header=self.Header(stamp=stamp, frame_id=frame_id),
            height=height,
            width=width,
            encoding="rgb8",
            is_bigendian=0,
            step=width * 3,
            data=list(data),
        )

    def wait_matched(self, writer, timeout):
        end = time.time() + timeout
        while time.time() < end:
            if writer.get_matched_subscriptions():
                return True
            time.sleep(0.05)
        return False

    def drain(self, key):
        out = []
        for s in self.readers[key].take(N=1000):
            if s is not None and hasattr(s, "__dataclass_fields__"):
                out.append(s)
        return out

    def call(self, service, srv, req_fields, resp_fields, request, timeout):
        """One ROS 2 service call with rmw_cyclonedds' request/reply mapping."""
        Req = self.t.service(srv, "Request", req_fields)
        Resp = self.t.service(srv, "Response", resp_fields)
        base = f"{self.node_fq()}/{service}"
        rq = DataWriter(self.dp, Topic(self.dp, f"rq{base}Request", Req), qos=qos(True, 10))
        rr = DataReader(self.dp, Topic(self.dp, f"rr{base}Reply", Resp), qos=qos(True, 10))
        end = time.time() + timeout
        while time.time() < end and not rq.get_matched_subscriptions():
            time.sleep(0.05)
        # The reply comes only to matched readers; give the server a moment to match ours.
        time.sleep(0.5)
        guid = int.from_bytes(os.urandom(8), "little") & 0x7FFF_FFFF_FFFF_FFFF
        if not req_fields:
            request = {"structure_needs_at_least_one_member": 0}
        rq.write(Req(header_guid=guid, header_seq=1, **request))
        while time.time() < end:
            for s in rr.take(N=10):
                if s is not None and hasattr(s, "__dataclass_fields__") and s.header_guid == guid:
                    return to_dict(s)
            time.sleep(0.02)
        return None

    def node_fq(self):
        return f"{self.ns}/{self.args.node_name}"


def lifecycle_checks(peer, timeout):
    Transition = peer.t.cls("lifecycle_msgs/msg/Transition")
    State = peer.t.cls("lifecycle_msgs/msg/State")
    get = peer.call("get_state", "lifecycle_msgs/GetState", [], [("current_state", State)], {}, timeout)
    emit("get_state", reply=get)
    desc = peer.t.cls("lifecycle_msgs/msg/TransitionDescription")
    avail = peer.call(
        "get_available_transitions",
        "lifecycle_msgs/GetAvailableTransitions",
        [],
        [("available_transitions", types.sequence[desc])],
        {},
        timeout,
    )
    emit("get_available_transitions", reply=avail)
    change = peer.call(
        "change_state",
        "lifecycle_msgs/ChangeState",
        [("transition", Transition)],
        [("success", bool)],
        {"transition": Transition(id=peer.args.transition_id, label=peer.args.transition_label)},
        timeout,
    )
    emit("change_state", reply=change)
    after = peer.call("get_state", "lifecycle_msgs/GetState", [], [("current_state", State)], {}, timeout)
    emit("get_state_after", reply=after)


def run_transport(peer):
    """Images out; the Rust side answers each with a DiagnosticArray describing what it got."""
    a = peer.args
    peer.reader("diag", f"{peer.ns}/diagnostics", "diagnostic_msgs/msg/DiagnosticArray")
    w = peer.writer(f"{peer.ns}/camera/image_raw", peer.Image, reliable=True)
    matched = peer.wait_matched(w, a.timeout)
    emit("matched", image_writer=matched)
    got = []
    end = time.time() + a.timeout
    i = 0
    while time.time() < end and len(got) < a.frames:
        if i < a.frames:
            w.write(peer.image(i, a.width, a.height, f"cam_{i}"))
            i += 1
        for d in peer.drain("diag"):
            got.append(to_dict(d))
            emit("diagnostics", msg=to_dict(d))
        time.sleep(0.1)
    if a.lifecycle:
        lifecycle_checks(peer, a.timeout)
    emit("summary", images_sent=i, diagnostics=len(got))


def run_node(peer):
    """`yolact node` end to end: frames at a steady pace, then a flood, then a transition."""
    a = peer.args
    ns = peer.ns
    peer.reader("inst", a.instances_topic or f"{ns}/camera/yolact/instances",
                "yolact_ros2_msgs/msg/InstanceArray")
    peer.reader("det", a.detections_topic or f"{ns}/camera/yolact/detections",
                "vision_msgs/msg/Detection2DArray")
    peer.reader("diag", "/diagnostics", "diagnostic_msgs/msg/DiagnosticArray")
    w = peer.writer(a.image_topic or f"{peer.ns}/camera/image_raw", peer.Image, reliable=False, depth=1)
    emit("matched", image_writer=peer.wait_matched(w, a.timeout))
    sent = {}
    counts = {"inst": 0, "det": 0, "diag": 0}

    def collect():
        for key in counts:
            for m in peer.drain(key):
                counts[key] += 1
                emit({"inst": "instances", "det": "detections", "diag": "diagnostics"}[key], msg=to_dict(m))

    end = time.time() + a.timeout
    i = 0
    # Steady phase: one frame, wait for its result (or a bounded time), next frame.
    while time.time() < end and i < a.frames:
        img = peer.image(i, a.width, a.height, f"cam_{i}")
        sent[i] = img
        w.write(img)
        emit("sent", i=i, frame_id=f"cam_{i}", sec=1000 + i, nanosec=500_000_000 + i)
        i += 1
        t0 = time.time()
        before = counts["inst"]
        while time.time() < end and counts["inst"] == before and time.time() - t0 < a.frame_wait:
            collect()
            time.sleep(0.05)
    # Flood: many frames at once; the node must keep only the newest and count the rest.
    for _ in range(a.flood):
        img = peer.image(i, a.width, a.height, f"cam_{i}")
        w.write(img)
        emit("sent", i=i, frame_id=f"cam_{i}", sec=1000 + i, nanosec=500_000_000 + i)
        i += 1
        time.sleep(a.flood_gap)
    settle = time.time() + a.settle
    while time.time() < min(end, settle):
        collect()
        time.sleep(0.05)
    if a.lifecycle:
        lifecycle_checks(peer, min(a.timeout, 20))
    collect()
    emit("summary", images_sent=i, **counts)


# sensor_msgs/PointField datatypes -> struct format characters.
POINT_FIELD_FORMATS = {1: "b", 2: "B", 3: "h", 4: "H", 5: "i", 6: "I", 7: "f", 8: "d"}


def cloud_points(c):
    """The points of a PointCloud2, read through its own fields, offsets and endianness."""
    data = bytes(c.data)
    order = ">" if c.is_bigendian else "<"
    out = []
    for i in range(c.height * c.width):
        row, col = divmod(i, c.width)
        base = row * c.row_step + col * c.point_step
        out.append({f.name: struct.unpack_from(order + POINT_FIELD_FORMATS[f.datatype], data,
                                               base + f.offset)[0] for f in c.fields})
    return out


def run_depth(peer):
    """Colour + aligned depth + CameraInfo in; 3D outputs (and diagnostics) out."""
    a = peer.args
    ns = peer.ns
    Info = peer.t.cls("sensor_msgs/msg/CameraInfo")
    Roi = peer.t.cls("sensor_msgs/msg/RegionOfInterest")
    peer.reader("inst", f"{ns}/camera/yolact/instances", "yolact_ros2_msgs/msg/InstanceArray")
    peer.reader("det3", f"{ns}/camera/yolact/detections_3d", "vision_msgs/msg/Detection3DArray")
    peer.reader("diag", "/diagnostics", "diagnostic_msgs/msg/DiagnosticArray")
    keys = {"inst": "instances", "det3": "detections_3d", "diag": "diagnostics"}
    if a.points:
        peer.reader("pts", f"{ns}/camera/yolact/points", "sensor_msgs/msg/PointCloud2")
        keys["pts"] = "points"
    w_img = peer.writer(f"{ns}/camera/image_raw", peer.Image, reliable=False, depth=1)
    w_depth = peer.writer(f"{ns}/camera/depth/image_raw", peer.Image, reliable=False, depth=1)
    w_info = peer.writer(f"{ns}/camera/depth/camera_info", Info, reliable=False, depth=1)
    emit("matched", image_writer=peer.wait_matched(w_img, a.timeout),
         depth_writer=peer.wait_matched(w_depth, a.timeout),
         info_writer=peer.wait_matched(w_info, a.timeout))
    counts = {k: 0 for k in keys}

    def collect():
        for key, kind in keys.items():
            for m in peer.drain(key):
                counts[key] += 1
                if key == "pts":
                    emit(kind, header=to_dict(m.header), fields=to_dict(m.fields),
                         points=cloud_points(m))
                else:
                    emit(kind, msg=to_dict(m))

    w, h = a.width, a.height
    fx = 0.0 if a.bad_info == "zero-fx" else a.fx
    info_w = w + 8 if a.bad_info == "wrong-size" else w
    end = time.time() + a.timeout
    for i in range(a.frames):
        stamp = peer.Time(sec=a.first_sec + i, nanosec=250_000_000)
        info = Info(
            header=peer.Header(stamp=stamp, frame_id="cam_depth_optical"),
            height=h, width=info_w, distortion_model="plumb_bob", d=[0.0] * 5,
            k=[fx, 0.0, (w - 1) / 2, 0.0, a.fx, (h - 1) / 2, 0.0, 0.0, 1.0],
            r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            p=[fx, 0.0, (w - 1) / 2, 0.0, 0.0, a.fx, (h - 1) / 2, 0.0, 0.0, 0.0, 1.0, 0.0],
            binning_x=0, binning_y=0,
            roi=Roi(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
        )
        depth = peer.Image(
            header=peer.Header(stamp=stamp, frame_id="cam_depth_optical"),
            height=h, width=w, encoding="16UC1", is_bigendian=0, step=w * 2,
            data=list(struct.pack("<H", a.plane_mm) * (w * h)),
        )
        img = peer.image(i, w, h, f"cam_{i}", stamp)
        # CameraInfo and depth first: the node pairs a colour frame as soon as it is processed.
        w_info.write(info)
        time.sleep(0.2)
        w_depth.write(depth)
        time.sleep(0.2)
        w_img.write(img)
        emit("sent", i=i, frame_id=f"cam_{i}", sec=a.first_sec + i, nanosec=250_000_000)
        t0 = time.time()
        before = counts["inst"]
        while time.time() < end and time.time() - t0 < a.frame_wait:
            collect()
            if counts["inst"] > before and (a.bad_info or counts["det3"] > i):
                break
            time.sleep(0.05)
    settle = time.time() + a.settle
    while time.time() < min(end, settle):
        collect()
        time.sleep(0.05)
    collect()
    emit("summary", **counts)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["transport", "node", "depth"])
    p.add_argument("--domain", type=int, default=0)
    p.add_argument("--namespace", default="/")
    p.add_argument("--node-name", default="yolact")
    p.add_argument("--msg-dir", default=os.path.join(os.path.dirname(__file__), "..", "msg"))
    p.add_argument("--frames", type=int, default=3)
    p.add_argument("--flood", type=int, default=0)
    p.add_argument("--flood-gap", type=float, default=0.01)
    p.add_argument("--frame-wait", type=float, default=20.0)
    p.add_argument("--settle", type=float, default=10.0)
    p.add_argument("--width", type=int, default=96)
    p.add_argument("--height", type=int, default=72)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--image-files", type=lambda v: v.split(","), default=[],
                   help="node mode: comma-separated raw rgb8 files (--width x --height) to send "
                   "instead of generated noise, frame i = file i")
    p.add_argument("--image-topic", default="")
    p.add_argument("--instances-topic", default="")
    p.add_argument("--detections-topic", default="")
    p.add_argument("--lifecycle", action="store_true")
    p.add_argument("--unicast", action="store_true", help="unicast discovery via 127.0.0.1 "
                   "(automatic when no interface has multicast)")
    p.add_argument("--transition-id", type=int, default=4)
    p.add_argument("--transition-label", default="deactivate")
    p.add_argument("--points", action="store_true", help="depth mode: subscribe to the cloud")
    p.add_argument("--plane-mm", type=int, default=1500, help="depth mode: the plane's depth")
    p.add_argument("--first-sec", type=int, default=2000, help="depth mode: first stamp, s")
    p.add_argument("--fx", type=float, default=80.0, help="depth mode: focal length, pixels")
    p.add_argument("--bad-info", choices=["", "zero-fx", "wrong-size"], default="",
                   help="depth mode: send a broken CameraInfo")
    a = p.parse_args()
    peer = Peer(a)
    {"transport": run_transport, "node": run_node, "depth": run_depth}[a.mode](peer)


if __name__ == "__main__":
    sys.exit(main())

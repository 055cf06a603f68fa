#
# kvm-hypervisor as Ganeti's `kvm` hypervisor class.
#
# Installed by `kvm-hypervisor ganeti install` as
# ganeti/hypervisor/kvmh_ganeti.py, with `_HYPERVISOR_MAP[HT_KVM]` pointing
# at `KvmHypervisor`; `kvm-hypervisor ganeti uninstall` puts Ganeti's own
# class back.
#
# The class only translates: Ganeti's objects into our instance spec,
# each operation into one run of our binary with `--json` against Ganeti's
# run directory, and our exit statuses and messages into Ganeti's
# exceptions. Whatever is logic lives in the Rust binary. It subclasses
# Ganeti's KVMHypervisor for what Ganeti's other parts read off the class:
# PARAMETERS (the hvparams the cluster configuration requires),
# CAN_MIGRATE, the parameter checks, the console command (our sockets are
# where Ganeti's are) and the ancillary files.
#
# The binary is /usr/local/sbin/kvm-hypervisor unless KVM_HYPERVISOR_BIN
# names another.

import json
import os
import subprocess
import tempfile

from ganeti import constants
from ganeti import errors
from ganeti import objects
from ganeti import pathutils
from ganeti.hypervisor import hv_base
from ganeti.hypervisor import hv_kvm

BINARY = os.environ.get("KVM_HYPERVISOR_BIN", "/usr/local/sbin/kvm-hypervisor")

# Our exit statuses (README): 0 success, 1 invalid input, 2 usage,
# 3 no such instance, 4 busy or wrong state, 5 the operation failed.
EXIT_NO_SUCH_INSTANCE = 3

# QEMU's transient migration states are not failures (Ganeti's bug,
# reference 11.4.1): they report as active.
_FINISHED = {
  "completed": constants.HV_MIGRATION_COMPLETED,
  "failed": constants.HV_MIGRATION_FAILED,
  "cancelled": constants.HV_MIGRATION_CANCELLED,
  }


class CommandFailed(errors.HypervisorError):
  """Our binary failed; carries its exit status."""

  def __init__(self, args, status, message):
    errors.HypervisorError.__init__(
      self, "kvm-hypervisor %s failed (exit %s): %s" %
      (" ".join(args[:2]), status, message))
    self.status = status


def _NicScript():
  """Ganeti's NIC script, as our binary's options: master's kvm-nic-setup
  (up and down), or 3.0's kvm-ifup (up only: Ganeti 3.0 tears nothing down
  by script), so NICs are set up as Ganeti's layer sets them, the admin's
  kvm-vif-bridge and kvm-ifup-os hooks included."""
  setup = getattr(pathutils, "KVM_NIC_SETUP", None)
  if setup and os.path.exists(setup):
    return ["--nic-script", setup]
  ifup = getattr(pathutils, "KVM_IFUP", None)
  if ifup and os.path.exists(ifup):
    return ["--nic-script", ifup, "--nic-script-up-only"]
  return []


def _Run(args, stdin=None, check=True):
  """Runs our binary on Ganeti's run directory; its stdout, or raises."""
  # Ganeti's own KVM layer shares the run directory: our runtime files are
  # Ganeti's array with our record inside, and `-name` is Ganeti's, so
  # that its layer sees and can run our instances too.
  argv = [BINARY, "--run-dir", hv_kvm.KVMHypervisor._ROOT_DIR,
          "--shared-with-ganeti"] + _NicScript() + list(args)
  proc = subprocess.run(argv, input=stdin, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, universal_newlines=True,
                        check=False)
  if check and proc.returncode != 0:
    message = proc.stderr.strip().replace("Error: ", "", 1) or proc.stdout
    raise CommandFailed(list(args), proc.returncode, message)
  return proc


def _Json(args, stdin=None):
  """Runs `args --json`; the JSON it printed (the last line of JSON lines)."""
  out = _Run(list(args) + ["--json"], stdin=stdin).stdout.strip()
  if not out:
    return None
  try:
    return json.loads(out)
  except ValueError:
    return json.loads(out.splitlines()[-1])


def _NicSpec(nic):
  """One NIC of our spec from Ganeti's NIC object."""
  params = nic.nicparams or {}
  spec = {
    "uuid": nic.uuid,
    "mac": nic.mac,
    "mode": params.get(constants.NIC_MODE, constants.NIC_MODE_BRIDGED),
    "link": params.get(constants.NIC_LINK, ""),
    "vlan": params.get(constants.NIC_VLAN, ""),
    }
  if nic.ip:
    spec["ip"] = nic.ip
  if nic.name:
    spec["name"] = nic.name
  return spec


def _DiskSpec(disk, link, uri):
  """One disk of our spec from Ganeti's (disk, link, uri)."""
  spec = {
    "uuid": disk.uuid,
    "size": disk.size,
    "mode": disk.mode,
    "dev_type": disk.dev_type,
    }
  if uri:
    spec["uri"] = uri
    spec["access"] = "userspace"
  else:
    spec["path"] = link
    spec["access"] = "kernelspace"
  if disk.name:
    spec["name"] = disk.name
  return spec


def InstanceSpec(instance, block_devices):
  """Our instance spec (JSON) for Ganeti's instance and block devices."""
  be = instance.beparams
  spec = {
    "name": instance.name,
    "uuid": instance.uuid,
    "memory": be[constants.BE_MAXMEM],
    "min_memory": be[constants.BE_MINMEM],
    "vcpus": be[constants.BE_VCPUS],
    "hvparams": dict(instance.hvparams),
    "disks": [_DiskSpec(d, link, uri) for (d, link, uri) in block_devices],
    "nics": [_NicSpec(n) for n in instance.nics],
    }
  if instance.network_port is not None:
    spec["network_port"] = instance.network_port
  return json.dumps(spec)


def _KvmPath(hvparams):
  if hvparams and hvparams.get(constants.HV_KVM_PATH):
    return hvparams[constants.HV_KVM_PATH]
  return constants.KVM_PATH


def _Finding(finding):
  field = finding["field"]
  if field.startswith("hvparams."):
    field = field[len("hvparams."):]
  return "%s: %s" % (field, finding["message"])


def _ParameterReport(hvparams, extra):
  """Our binary's report on `hvparams` (JSON), whether valid or not."""
  proc = _Run(["validate", "--hvparams", "-", "--json"] + extra,
              stdin=json.dumps(hvparams), check=False)
  try:
    return json.loads(proc.stdout)
  except ValueError:
    raise CommandFailed(["validate", "--hvparams"], proc.returncode,
                        proc.stderr.strip())


def _CheckParameters(hvparams, extra):
  report = _ParameterReport(hvparams, extra)
  if not report.get("valid"):
    raise errors.HypervisorError(
      "; ".join(_Finding(p) for p in report.get("problems", [])))


class KvmHypervisor(hv_kvm.KVMHypervisor):
  """Ganeti's KVM hypervisor, served by kvm-hypervisor."""

  # Lifecycle

  def StartInstance(self, instance, block_devices, startup_paused):
    # Ganeti's kvmd tells a guest's own power-off from a crash on our
    # `ctrl/NAME.kvmd` socket when user_shutdown is on (Ganeti's way).
    self._StartKvmd(instance.hvparams)
    fd, path = tempfile.mkstemp(prefix="kvmh-", suffix=".json")
    try:
      with os.fdopen(fd, "w") as spec:
        spec.write(InstanceSpec(instance, block_devices))
      args = ["start", path]
      if startup_paused:
        args.append("--paused")
      _Json(args)
    finally:
      os.unlink(path)

  def StopInstance(self, instance, force=False, retry=False, name=None,
                   timeout=None):
    name = name or instance.name
    args = ["stop", name]
    if force:
      args.append("--force")
    if timeout is not None:
      args += ["--timeout", str(int(timeout))]
    proc = _Run(args + ["--json"], check=False)
    # Already gone (Ganeti polls with retries): done.
    if proc.returncode not in (0, EXIT_NO_SUCH_INSTANCE):
      raise CommandFailed(args, proc.returncode, proc.stderr.strip())

  def CleanupInstance(self, instance_name):
    proc = _Run(["cleanup", instance_name, "--json"], check=False)
    if proc.returncode not in (0, EXIT_NO_SUCH_INSTANCE):
      raise CommandFailed(["cleanup", instance_name], proc.returncode,
                          proc.stderr.strip())

  def RebootInstance(self, instance):
    _Json(["reboot", instance.name])

  def BalloonInstanceMemory(self, instance, mem):
    _Json(["balloon", instance.name, str(mem)])

  # Ganeti 3.1 and later: a disk grown by `gnt-instance grow-disk` (its
  # new size in bytes, always whole MiB) is announced to the running guest.
  def ResizeDisk(self, instance, disk, new_size):
    try:
      _Json(["resize-disk", instance.name, disk.uuid,
             "%dM" % (new_size // (1024 * 1024))])
    except CommandFailed as err:
      raise errors.HotplugError(str(err))

  # Listing

  @staticmethod
  def _Info(entry):
    state = entry.get("state")
    if state in ("running", "paused", "migrating"):
      istat = hv_base.HvInstanceState.RUNNING
    else:
      istat = hv_base.HvInstanceState.SHUTDOWN
    return (entry["name"], entry.get("pid") or 0,
            entry.get("memory_mib") or 0, entry.get("vcpus") or 0, istat, 0)

  def ListInstances(self, hvparams=None):
    return [e["name"] for e in _Json(["list"]) or []
            if e.get("state") in ("running", "paused", "migrating")]

  def GetInstanceInfo(self, instance_name, hvparams=None):
    proc = _Run(["info", instance_name, "--json"], check=False)
    if proc.returncode == EXIT_NO_SUCH_INSTANCE:
      return None
    if proc.returncode != 0:
      raise CommandFailed(["info", instance_name], proc.returncode,
                          proc.stderr.strip())
    entry = json.loads(proc.stdout)
    entry.setdefault("name", instance_name)
    if entry.get("state") in ("stale", "exited", "crashed", None):
      return None
    return self._Info(entry)

  def GetAllInstancesInfo(self, hvparams=None):
    infos = []
    for entry in _Json(["info", "--all"]) or []:
      if entry.get("state") not in ("stale", "exited", "crashed", None):
        infos.append(self._Info(entry))
    return infos

  # The node

  def GetNodeInfo(self, hvparams=None):
    info = _Json(["node-info", "--qemu", _KvmPath(hvparams)])
    version = info.get("qemu_version") or "0.0.0"
    parts = [int(p) for p in version.split(".")[:3]] + [0, 0, 0]
    return {
      "memory_total": info.get("memory_total_mib") or 0,
      "memory_free": info.get("memory_free_mib") or 0,
      "memory_dom0": info.get("memory_active_mib") or 0,
      "cpu_total": info.get("cpus") or 0,
      "cpu_dom0": info.get("cpus") or 0,
      "cpu_nodes": info.get("numa_nodes") or 1,
      "cpu_sockets": info.get("cpu_sockets") or 1,
      constants.HV_NODEINFO_KEY_VERSION: tuple(parts[:3]),
      }

  def Verify(self, hvparams=None):
    proc = _Run(["verify", "--qemu", _KvmPath(hvparams), "--json"],
                check=False)
    try:
      report = json.loads(proc.stdout)
    except ValueError:
      return "kvm-hypervisor verify failed (exit %s): %s" % \
        (proc.returncode, proc.stderr.strip())
    msgs = ["%s: %s" % (c["what"], c["detail"])
            for c in report["checks"] if c["verdict"] == "fail"]
    # Ganeti's console wrapper (not ours) runs socat.
    if not os.path.exists(constants.SOCAT_PATH):
      msgs.append("The socat binary ('%s') does not exist" %
                  constants.SOCAT_PATH)
    return self._FormatVerifyResults(msgs)

  # PowercycleNode is Ganeti's own (sysrq on the host): not a QEMU matter.

  # Parameters: checked by our binary, which knows every hvparam of
  # Ganeti's (and does better where Ganeti is wrong, reference 11).

  @classmethod
  def CheckParameterSyntax(cls, hvparams):
    _CheckParameters(hvparams, ["--syntax-only"])

  @classmethod
  def ValidateParameters(cls, hvparams):
    _CheckParameters(hvparams, [])

  @classmethod
  def AssessParameters(cls, hvparams):
    report = _ParameterReport(hvparams, ["--syntax-only"])
    return [_Finding(w) for w in report.get("warnings", [])]

  # Hotplug: disks and NICs added and removed, NICs modified.

  def HotplugSupported(self, instance):
    if self.GetInstanceInfo(instance.name) is None:
      raise errors.HotplugError("Instance is probably down")

  def VerifyHotplugSupport(self, instance, action, dev_type):
    supported = {
      constants.HOTPLUG_TARGET_DISK: (constants.HOTPLUG_ACTION_ADD,
                                      constants.HOTPLUG_ACTION_REMOVE),
      constants.HOTPLUG_TARGET_NIC: (constants.HOTPLUG_ACTION_ADD,
                                     constants.HOTPLUG_ACTION_REMOVE,
                                     constants.HOTPLUG_ACTION_MODIFY),
      }
    if action not in supported.get(dev_type, ()):
      raise errors.HotplugError("Hotplug %s of a %s is not supported" %
                                (action, dev_type))

  @staticmethod
  def _Hotplug(args):
    try:
      return _Json(["hotplug"] + args)
    except CommandFailed as err:
      raise errors.HotplugError(str(err))

  def HotAddDevice(self, instance, dev_type, device, extra, seq):
    if dev_type == constants.HOTPLUG_TARGET_DISK:
      link, uri = extra
      spec = _DiskSpec(device, link, uri)
      self._Hotplug(["add-disk", instance.name, json.dumps(spec)])
    else:
      self._Hotplug(["add-nic", instance.name, json.dumps(_NicSpec(device))])

  def HotDelDevice(self, instance, dev_type, device, _, seq):
    verb = "del-disk" if dev_type == constants.HOTPLUG_TARGET_DISK \
      else "del-nic"
    self._Hotplug([verb, instance.name, device.uuid])

  def HotModDevice(self, instance, dev_type, device, _, seq):
    if dev_type != constants.HOTPLUG_TARGET_NIC:
      raise errors.HotplugError("Only NICs can be modified while running")
    self._Hotplug(["mod-nic", instance.name, json.dumps(_NicSpec(device))])

  # Migration (reference 1.7)

  def MigrationInfo(self, instance):
    return _Run(["migration-info", instance.name]).stdout

  def AcceptInstance(self, instance, info, target):
    port = instance.hvparams[constants.HV_MIGRATION_PORT]
    listen = "[%s]:%s" % (target, port) if ":" in target else \
      "%s:%s" % (target, port)
    _Json(["accept", "-", "--listen", listen], stdin=info)

  def MigrateInstance(self, cluster_name, instance, target, live):
    port = instance.hvparams[constants.HV_MIGRATION_PORT]
    address = "[%s]:%s" % (target, port) if ":" in target else \
      "%s:%s" % (target, port)
    args = ["migrate", instance.name, "--target", address]
    if not live:
      args.append("--offline")
    _Json(args)

  def GetMigrationStatus(self, instance):
    p = _Json(["migration-status", instance.name])
    status = _FINISHED.get(p["status"], constants.HV_MIGRATION_ACTIVE)
    result = objects.MigrationStatus(status=status)
    if p.get("transferred") is not None:
      result.transferred_ram = p["transferred"]
      result.total_ram = p.get("total")
    # Ganeti's switch (postcopy-ram in migration_caps, after the first full
    # pass); our binary sends it at most once.
    caps = instance.hvparams.get(constants.HV_KVM_MIGRATION_CAPS, "")
    if p["status"] == "postcopy-active" or p.get("switched_to_postcopy"):
      result.postcopy_status = "postcopy-active"
    elif ("postcopy-ram" in caps and p["status"] == "active"
          and (p.get("passes") or 0) >= 2):
      _Json(["migrate-postcopy", instance.name])
      result.postcopy_status = "postcopy-active"
    return result

  def FinalizeMigrationSource(self, instance, success, live):
    _Json(["finalize-source", instance.name,
           "--success" if success else "--failure"])

  def FinalizeMigrationDst(self, instance, info, success):
    _Json(["finalize-target", instance.name,
           "--success" if success else "--failure"])

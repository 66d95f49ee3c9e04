#!/usr/bin/python3
"""Groups ThreadSanitizer reports (the log_path files of a scripts/tsan.sh run)
and prints the data races whose accesses are in Sluice's own code.

Reports that any access stack runs through absl, gRPC (the libraries or
gRPC++'s inline code), gpr or protobuf are left out: those libraries are not
instrumented, so TSan sees their atomics and internal handoffs (a gRPC
callback on another thread, a Condition evaluated by the unlocking thread) as
races. Thread leaks (gRPC's threads at exit) too, and reports cut short by a
process killed while writing them.

Usage: tsan_reports.py LOG_DIR     exit 1 if a race is left, 0 otherwise
"""
import collections
import glob
import re
import sys

LIBRARIES = re.compile(r'libabsl_|libgrpc|libgpr|libprotobuf|absl/synchronization/mutex\.h'
                       r'| grpc::| grpc_core::')  # gRPC++'s inline code in our binaries
FRAME = re.compile(r'\s+#\d+ (.*?) (\S+:\d+|<null>) \((\S+?)\+')


def reports(path):
    with open(path, errors='replace') as f:
        text = f.read()
    for report in text.split('WARNING: ThreadSanitizer: ')[1:]:
        yield report.split('\n==================')[0]


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    groups = collections.OrderedDict()
    total = 0
    truncated = 0
    for path in sorted(glob.glob(sys.argv[1] + '/*')):
        for report in reports(path):
            total += 1
            kind = report.split(' (pid')[0]
            if kind == 'thread leak':
                continue
            accesses = re.split(r'\n  (?:Thread T|Location is|Mutex M|SUMMARY)', report)[0]
            if LIBRARIES.search(accesses):
                continue
            if not FRAME.search(accesses) or 'Previous' not in accesses:
                truncated += 1  # the process was killed while writing it
                continue
            tops = []
            for block in re.split(r'\n\s*\n', accesses):
                for line in block.split('\n'):
                    m = FRAME.match(line)
                    if m and 'libtsan' not in m.group(3) and not m.group(2).startswith(
                            ('/usr/include', '<null>')):
                        tops.append('%s %s' % (m.group(1)[:80], m.group(2)))
                        break
            key = (kind, tuple(tops))
            groups.setdefault(key, [0, path, report])[0] += 1
    for (kind, tops), (count, path, report) in groups.items():
        print('%d x %s' % (count, kind))
        for top in tops:
            print('    ' + top)
        print('    e.g. in ' + path)
        print('\n'.join('      ' + l for l in report.split('\n')
                        if '/usr/include' not in l and 'libtsan' not in l)[:3000])
    print('%d TSan reports (%d cut short), %d kinds in Sluice code' %
          (total, truncated, len(groups)))
    return 1 if groups else 0


if __name__ == '__main__':
    sys.exit(main())

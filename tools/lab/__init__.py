"""The desktop lab around the firmware: runner.py (how firmware code runs here), lanes.py
(the test lanes), mplib.py (micropython-lib modules), rig.py (real head-end, broker and meter
processes), netlab.py (firewalled sites in network namespaces), middlebox.py, pki.py,
e2e.py (`make e2e`), deploy.py (`make deploy`) and fuzz.py (the long fuzz campaign)."""

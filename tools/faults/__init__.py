"""`make faults`: fault campaigns with ledgers (__main__.py): meter power losses and corrupted
flash (meter_campaigns.py), head-end crashes (headend_campaigns.py), partitions and a hostile
network (network_campaigns.py), on a lab rig (campaign.py), checked by ledger.py."""

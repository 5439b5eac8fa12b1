# Booting from SSDs: a Raspberry Pi 5 server on an NVMe SSD, a Pi 4 agent
# on a USB SSD whose USB–SATA bridge misbehaves with UAS, and an agent that
# keeps the image's boot settings as they are.
#
#   pibake plan  recipes/examples/ssd.hcl
#   pibake build recipes/examples/ssd.hcl
#
# Each profiled node's config.txt gets one pibake block under its model's
# filter, and the Pi 4's cmdline.txt the usb-storage quirk; the first boot
# records the boot device and the bootloader (docs: "Booting from an SSD").

cluster {
  name = "ssd"
}

node "pi5-nvme" {
  role = "server"
  ip   = "192.168.1.20/24"
  hardware {
    cpus        = 4
    memory_gb   = 8
    model       = "pi5"
    boot_device = "nvme"
    config_txt  = ["dtoverlay=disable-bt"]
    # First boot (from SD or the SSD) stages this order for the next reboot:
    # NVMe, then USB, then SD.
    bootloader {
      boot_order = "nvme,usb,sd"
      apply      = true
    }
  }
}

node "pi4-usb" {
  role   = "agent"
  server = "192.168.1.20"
  hardware {
    model              = "pi4"
    boot_device        = "usb"
    usb_storage_quirks = ["152d:0578"] # JMicron JMS578: usb-storage, not uas
    # The Pi 4's default order (0xf41): checked at first boot, not changed.
    bootloader {
      boot_order = "sd,usb"
    }
  }
}

node "pi-plain" {
  role   = "agent"
  server = "192.168.1.20"
}

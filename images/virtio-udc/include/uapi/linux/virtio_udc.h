/* SPDX-License-Identifier: ((GPL-2.0 WITH Linux-syscall-note) OR BSD-3-Clause) */
/*
 * virtio-udc: a virtual USB device controller.
 *
 * The wire format between the driver and the device. The single source of
 * truth is docs/virtio-udc.md in the virtio-udc project; every definition
 * below follows it exactly and a test there checks that they agree. The
 * device ID, VIRTIO_ID_UDC, belongs in <linux/virtio_ids.h>.
 */
#ifndef _LINUX_VIRTIO_UDC_H
#define _LINUX_VIRTIO_UDC_H

#include <linux/const.h>
#include <linux/types.h>

/* Section 3: virtqueues */
#define VIRTIO_UDC_VQ_CONTROL			0
#define VIRTIO_UDC_VQ_EVENT			1
#define VIRTIO_UDC_VQ_XFER			2
#define VIRTIO_UDC_NUM_VQS			3

/* Section 4: configuration space */
#define VIRTIO_UDC_CONFIG_F_SG			_BITUL(0)
#define VIRTIO_UDC_CONFIG_F_REMOTE_WAKEUP	_BITUL(1)

#define VIRTIO_UDC_EP_CAP_CONTROL		_BITUL(0)
#define VIRTIO_UDC_EP_CAP_ISO			_BITUL(1)
#define VIRTIO_UDC_EP_CAP_BULK			_BITUL(2)
#define VIRTIO_UDC_EP_CAP_INT			_BITUL(3)

#define VIRTIO_UDC_MAX_EPS			30

#define VIRTIO_UDC_SPEED_UNKNOWN		0
#define VIRTIO_UDC_SPEED_LOW			1
#define VIRTIO_UDC_SPEED_FULL			2
#define VIRTIO_UDC_SPEED_HIGH			3
#define VIRTIO_UDC_SPEED_SUPER			5
#define VIRTIO_UDC_SPEED_SUPER_PLUS		6

/**
 * struct virtio_udc_ep_cap - one endpoint the device offers
 * @addr: endpoint address as in bEndpointAddress; entry 0 is ep0
 * @caps: VIRTIO_UDC_EP_CAP_* bits, the transfer types it supports
 * @max_packet_limit: largest wMaxPacketSize (bits 10..0) it accepts
 * @max_streams: reserved for SuperSpeed bulk streams, 0
 * @reserved: zero
 */
struct virtio_udc_ep_cap {
	__u8 addr;
	__u8 caps;
	__le16 max_packet_limit;
	__le16 max_streams;
	__le16 reserved;
};

/**
 * struct virtio_udc_config - the device configuration space (read-only)
 * @flags: VIRTIO_UDC_CONFIG_F_* bits
 * @max_segments: most segments one transfer request may carry
 * @max_speed: fastest bus speed the device can signal (VIRTIO_UDC_SPEED_*)
 * @num_eps: valid entries in @eps, ep0 included
 * @reserved: zero
 * @reserved2: zero
 * @eps: the endpoints
 */
struct virtio_udc_config {
	__le32 flags;
	__le32 max_segments;
	__u8 max_speed;
	__u8 num_eps;
	__le16 reserved;
	__le32 reserved2;
	struct virtio_udc_ep_cap eps[VIRTIO_UDC_MAX_EPS];
};

/* Section 5: transfers on the xferq */
#define VIRTIO_UDC_XFER_OP_TRANSFER		0x0001

#define VIRTIO_UDC_XFER_F_ZERO			_BITUL(0)

/**
 * struct virtio_udc_xfer_req - transfer request header
 * @opcode: VIRTIO_UDC_XFER_OP_TRANSFER
 * @ep: endpoint address; 0x00 or 0x80 for ep0
 * @flags: VIRTIO_UDC_XFER_F_* bits
 * @length: bytes to transfer
 * @num_segs: segment descriptors that follow the header
 * @reserved: zero
 * @tag: driver-chosen identifier of the request, named by XFER_CANCEL
 */
struct virtio_udc_xfer_req {
	__le16 opcode;
	__u8 ep;
	__u8 flags;
	__le32 length;
	__le32 num_segs;
	__le32 reserved;
	__le64 tag;
};

/**
 * struct virtio_udc_seg - one segment of a transfer's buffer
 * @addr: DMA address of the segment
 * @len: bytes in the segment
 * @reserved: zero
 */
struct virtio_udc_seg {
	__le64 addr;
	__le32 len;
	__le32 reserved;
};

/**
 * struct virtio_udc_xfer_status - what the device writes back
 * @status: VIRTIO_UDC_S_* code
 * @actual: bytes transferred
 */
struct virtio_udc_xfer_status {
	__le32 status;
	__le32 actual;
};

/* Section 6: commands on the controlq */
#define VIRTIO_UDC_CMD_PULLUP			0x0001
#define VIRTIO_UDC_CMD_EP_ENABLE		0x0002
#define VIRTIO_UDC_CMD_EP_DISABLE		0x0003
#define VIRTIO_UDC_CMD_EP_SET_HALT		0x0004
#define VIRTIO_UDC_CMD_EP_FIFO_STATUS		0x0005
#define VIRTIO_UDC_CMD_EP_FIFO_FLUSH		0x0006
#define VIRTIO_UDC_CMD_XFER_CANCEL		0x0007
#define VIRTIO_UDC_CMD_GET_FRAME		0x0008
#define VIRTIO_UDC_CMD_WAKEUP			0x0009
#define VIRTIO_UDC_CMD_SET_SELFPOWERED		0x000a

/**
 * struct virtio_udc_ctrl_req - a command
 * @opcode: VIRTIO_UDC_CMD_*
 * @ep: endpoint address, for endpoint commands
 * @ep_type: EP_ENABLE: USB transfer type (0 control .. 3 interrupt)
 * @value: command argument
 * @max_packet: EP_ENABLE: wMaxPacketSize bits 10..0
 * @interval: EP_ENABLE: bInterval
 * @max_burst: EP_ENABLE: SuperSpeed bMaxBurst
 * @mult: EP_ENABLE: extra transactions per microframe
 * @reserved: zero
 * @tag: XFER_CANCEL: the request's tag
 */
struct virtio_udc_ctrl_req {
	__le16 opcode;
	__u8 ep;
	__u8 ep_type;
	__le32 value;
	__le16 max_packet;
	__u8 interval;
	__u8 max_burst;
	__u8 mult;
	__u8 reserved[3];
	__le64 tag;
};

/**
 * struct virtio_udc_ctrl_resp - a command's response
 * @status: VIRTIO_UDC_S_* code
 * @value: the command's result, where it has one
 */
struct virtio_udc_ctrl_resp {
	__le32 status;
	__le32 value;
};

/* Section 7: events on the eventq */
#define VIRTIO_UDC_EVT_BUS_RESET		0x0001
#define VIRTIO_UDC_EVT_SETUP			0x0002
#define VIRTIO_UDC_EVT_SUSPEND			0x0003
#define VIRTIO_UDC_EVT_RESUME			0x0004
#define VIRTIO_UDC_EVT_DISCONNECT		0x0005
#define VIRTIO_UDC_EVT_ADDRESS			0x0006
#define VIRTIO_UDC_EVT_EP_HALT			0x0007

/**
 * struct virtio_udc_event - one bus event
 * @type: VIRTIO_UDC_EVT_*
 * @ep: EP_HALT: the endpoint
 * @reserved: zero
 * @value: type-specific
 * @setup: SETUP: the setup packet as it was on the wire
 */
struct virtio_udc_event {
	__le16 type;
	__u8 ep;
	__u8 reserved;
	__le32 value;
	__u8 setup[8];
};

/* Section 8: status codes */
#define VIRTIO_UDC_S_OK				0
#define VIRTIO_UDC_S_SHUTDOWN			1
#define VIRTIO_UDC_S_CANCELLED			2
#define VIRTIO_UDC_S_STALL			3
#define VIRTIO_UDC_S_OVERFLOW			4
#define VIRTIO_UDC_S_PROTO			5
#define VIRTIO_UDC_S_DMA_FAULT			6
#define VIRTIO_UDC_S_INVALID			7
#define VIRTIO_UDC_S_UNSUPPORTED		8
#define VIRTIO_UDC_S_BUSY			9
#define VIRTIO_UDC_S_NOT_FOUND			10

#endif /* _LINUX_VIRTIO_UDC_H */
